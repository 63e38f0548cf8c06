"""Model inference for every live call, batched: one job per event-loop tick on one shared thread.

Why: a thread per call and per model (what Pipecat's VAD does) means ~50 threads woken 50 times a
second at 25 calls, all fighting for the GIL, and one ONNX run per call per window, each paying the
run's fixed cost. Here a processor `await`s `TickBatcher.submit(item)`; the requests of all calls that
arrive in the same loop iteration (and those that arrive while a job is running) go to the shared
worker thread as one list, and `run_batch` serves them together (one ONNX run along the batch axis).
The event loop never runs the inference; ONNX releases the GIL while it computes.

One broken request never fails the others: if `run_batch` raises, the items are run one by one and
only the failing ones get the exception.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def inference_executor() -> ThreadPoolExecutor:
    """The process's single inference thread (one thread: batches never contend with each other)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callgate-infer")
        return _EXECUTOR


@dataclass
class _LoopQueue:
    pending: list[tuple[Any, asyncio.Future]] = field(default_factory=list)
    scheduled: bool = False
    running: bool = False
    batches: int = 0
    items: int = 0


class TickBatcher(Generic[T, R]):
    """Gathers `submit()`ed items per event loop and runs them as batches on the inference thread."""

    def __init__(self, run_batch: Callable[[list[T]], list[R]], name: str) -> None:
        self.run_batch = run_batch
        self.name = name
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = weakref.WeakKeyDictionary()

    async def submit(self, item: T) -> R:
        """The result of `run_batch` for `item`, computed together with the other calls' items."""
        loop = asyncio.get_running_loop()
        q = self._queues.get(loop)
        if q is None:
            q = self._queues[loop] = _LoopQueue()
        fut: asyncio.Future = loop.create_future()
        q.pending.append((item, fut))
        self._schedule(loop, q)
        return await fut

    def stats(self) -> tuple[int, int]:
        """(batches, items) run so far on the current loop: items / batches is the mean batch size."""
        q = self._queues.get(asyncio.get_running_loop())
        return (q.batches, q.items) if q else (0, 0)

    def _schedule(self, loop: asyncio.AbstractEventLoop, q: _LoopQueue) -> None:
        if not q.scheduled and not q.running and q.pending:
            q.scheduled = True
            loop.call_soon(self._flush, loop, q)  # after the callbacks already ready this tick

    def _flush(self, loop: asyncio.AbstractEventLoop, q: _LoopQueue) -> None:
        q.scheduled = False
        batch = [(item, fut) for item, fut in q.pending if not fut.done()]  # a cancelled call's item is dropped
        q.pending = []
        if not batch:
            return
        q.running = True
        q.batches += 1
        q.items += len(batch)
        job = loop.run_in_executor(inference_executor(), self._run_safe, [item for item, _ in batch])
        job.add_done_callback(lambda j: self._done(loop, q, batch, j))

    def _run_safe(self, items: list[T]) -> list[tuple[bool, Any]]:
        try:
            results = self.run_batch(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for {len(items)} items")
            return [(True, r) for r in results]
        except Exception:
            if len(items) == 1:
                raise
        out: list[tuple[bool, Any]] = []
        for item in items:  # find the broken one(s); the others still get their answer
            try:
                out.append((True, self.run_batch([item])[0]))
            except Exception as e:  # noqa: BLE001 - handed to the caller that submitted it
                out.append((False, e))
        return out

    def _done(
        self, loop: asyncio.AbstractEventLoop, q: _LoopQueue, batch: list[tuple[Any, asyncio.Future]], job: asyncio.Future
    ) -> None:
        q.running = False
        try:
            results = job.result()
        except BaseException as e:  # noqa: BLE001 - a one-item batch failed: its caller gets the error
            results = [(False, e)] * len(batch)
        for (_item, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._schedule(loop, q)
