"""TickBatcher: calls' requests are served together on the shared inference thread, one broken
request fails alone; batched Silero and AMD give the single-call results exactly."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from amd_model.runtime import AmdModel
from callgate import synth
from callgate.audio import to_int16
from processors.batching import TickBatcher, check_pcm
from processors.speech import _VAD_BATCHER, SpeechAnalyzer, process_batch


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
    def check(item: int) -> None:
        if item == 3:
            raise ValueError("bad item")

    batcher: TickBatcher[int, int] = TickBatcher(lambda items: [i + 1 for i in items], "test", check=check)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [1, 2, 3, 5, 6]
    assert isinstance(results[3], ValueError)


def fed(analyzer: SpeechAnalyzer) -> int:
    """Samples the analyzer has taken in (cut into windows, or buffered)."""
    return analyzer._consumed + len(analyzer._buf)


async def test_a_failing_batch_is_never_run_again_so_no_call_gets_its_audio_twice() -> None:
    """The batch functions advance each call's state: re-running the batch item by item to find a
    culprit fed the other calls their audio twice (a VAD's clock moved 3200 samples for 1600)."""
    calls = [SpeechAnalyzer() for _ in range(3)]
    pcm = b"\x00\x01" * 1600

    def run(items: list[tuple[SpeechAnalyzer, bytes]]) -> list[list]:
        out = process_batch([a for a, _ in items], [p for _, p in items])
        raise RuntimeError("a bug after the state moved")
        return out

    batcher = TickBatcher(run, "test", check=lambda item: check_pcm(item[1]))
    results = await asyncio.gather(*(batcher.submit((a, pcm)) for a in calls), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert [fed(a) for a in calls] == [1600] * 3  # each call's audio went in once


async def test_the_shared_batchers_refuse_broken_audio_alone() -> None:
    good, bad = SpeechAnalyzer(), SpeechAnalyzer()
    results = await asyncio.gather(
        _VAD_BATCHER.submit((good, b"\x00\x00" * 160)), _VAD_BATCHER.submit((bad, b"\x00" * 321)),
        return_exceptions=True,
    )
    assert results[0] == [] and isinstance(results[1], ValueError) and "odd length" in str(results[1])
    assert (fed(good), fed(bad)) == (160, 0)


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
