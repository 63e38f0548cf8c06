"""TickBatcher: calls' requests are served together on the shared inference thread, one broken
request fails alone; batched Silero and AMD give the single-call results exactly."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from amd_model.runtime import AmdModel
from callgate import synth
from callgate.audio import to_int16
from processors.batching import TickBatcher
from processors.speech import SpeechAnalyzer, process_batch


async def test_concurrent_submits_run_as_few_batches_off_the_loop() -> None:
    seen: list[tuple[int, str]] = []

    def run(items: list[int]) -> list[int]:
        seen.append((len(items), threading.current_thread().name))
        return [i * 2 for i in items]

    batcher: TickBatcher[int, int] = TickBatcher(run, "test")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(50)))
    assert results == [i * 2 for i in range(50)]
    assert len(seen) < 5  # 50 requests of one tick: one batch (plus what came while it ran)
    assert all(name.startswith("callgate-infer") for _, name in seen)
    assert batcher.stats() == (len(seen), 50)


async def test_a_failing_item_fails_alone() -> None:
    def run(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("bad item")
        return [i + 1 for i in items]

    batcher: TickBatcher[int, int] = TickBatcher(run, "test")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [1, 2, 3, 5, 6]
    assert isinstance(results[3], ValueError)


def test_batched_vad_gives_each_call_its_own_events() -> None:
    calls = [
        to_int16(synth.concat(synth.silence(0.3 * i), synth.speech("Hello, this is a test call."), synth.silence(1)))
        for i in range(4)
    ]
    alone = [SpeechAnalyzer() for _ in calls]
    together = [SpeechAnalyzer() for _ in calls]
    ev_alone: list[list] = [[] for _ in calls]
    ev_together: list[list] = [[] for _ in calls]
    for s in range(0, max(map(len, calls)), 800):
        chunks = [c[s : s + 800] for c in calls]
        for i, (a, c) in enumerate(zip(alone, chunks, strict=True)):
            ev_alone[i] += a.process(c)
        for i, ev in enumerate(process_batch(together, chunks)):
            ev_together[i] += ev
    assert ev_alone == ev_together
    assert all(any(e.kind == "start" for e in ev) for ev in ev_alone)
    starts = [next(e.t_ms for e in ev if e.kind == "start") for ev in ev_alone]
    assert starts == sorted(starts) and starts[-1] - starts[0] >= 800  # each call kept its own clock


def test_batched_amd_steps_equal_single_steps() -> None:
    model = AmdModel()
    rng = np.random.default_rng(0)
    calls = [(rng.standard_normal(8000) * 2000 * (i + 1)).astype(np.int16) for i in range(3)]
    single = [model.run(c) for c in calls]
    states = [model.new_state() for _ in calls]
    batched = np.array(
        [model.step_batch([c[j * 800 : (j + 1) * 800] for c in calls], states) for j in range(10)]
    )  # (steps, calls, classes)
    for i in range(len(calls)):
        assert np.array_equal(batched[:, i], single[i])
