"""Model inference for every live call, batched: one job per event-loop tick on one shared thread.

Why: a thread per call and per model (what Pipecat's VAD does) means ~50 threads woken 50 times a
second at 25 calls, all fighting for the GIL, and one ONNX run per call per window, each paying the
run's fixed cost. Here a processor `await`s `TickBatcher.submit(item)`; the requests of all calls that
arrive in the same loop iteration (and those that arrive while a job is running) go to the shared
worker thread as one list, and `run_batch` serves them together (one ONNX run along the batch axis).
The event loop never runs the inference; ONNX releases the GIL while it computes.

One broken request never fails the others: each item first passes the batcher's `check` (the input a
live call could get wrong: the audio's type, size, shape), and one that fails it gets the exception alone,
before the batch runs. A batch is never re-run item by item to find a culprit: the batch functions advance
each call's state (buffered audio, the model's recurrent state), so a second run would feed the other
calls their audio twice and shift their clocks for good. Should `run_batch` itself raise (a bug, not an
input), every item of that batch gets the error.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def check_pcm(pcm: Any, *, samples: int | None = None) -> None:
    """A live call's audio as the batch functions take it: PCM16 bytes (an even length) or a 1-D array
    (of `samples` samples when given). Raises ValueError naming what is wrong."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError(f"PCM16 audio of an odd length ({len(pcm)} bytes)")
        return
    if not isinstance(pcm, np.ndarray) or pcm.ndim != 1:
        raise ValueError(f"audio must be PCM16 bytes or a 1-D array, got {type(pcm).__name__}")
    if samples is not None and len(pcm) != samples:
        raise ValueError(f"audio step of {len(pcm)} samples, expected {samples}")


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

    def __init__(
        self, run_batch: Callable[[list[T]], list[R]], name: str, check: Callable[[T], None] | None = None
    ) -> None:
        self.run_batch = run_batch
        self.name = name
        self.check = check  # raises for an item the batch must not see
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
        out: list[tuple[bool, Any]] = [(False, None)] * len(items)
        good: list[int] = []
        for i, item in enumerate(items):
            try:
                if self.check is not None:
                    self.check(item)
                good.append(i)
            except Exception as e:  # noqa: BLE001 - handed to the caller that submitted it, alone
                out[i] = (False, e)
        if not good:
            return out
        try:
            results = self.run_batch([items[i] for i in good])
            if len(results) != len(good):
                raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for {len(good)} items")
        except Exception as e:  # noqa: BLE001 - a bug in the batch: each of its callers sees it
            for i in good:
                out[i] = (False, e)
            return out
        for i, r in zip(good, results, strict=True):
            out[i] = (True, r)
        return out

    def _done(
        self, loop: asyncio.AbstractEventLoop, q: _LoopQueue, batch: list[tuple[Any, asyncio.Future]], job: asyncio.Future
    ) -> None:
        q.running = False
        try:
            results = job.result()
        except BaseException as e:  # noqa: BLE001 - the job itself failed: every caller gets the error
            results = [(False, e)] * len(batch)
        for (_item, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._schedule(loop, q)
