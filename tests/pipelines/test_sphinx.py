"""The offline recognizer's worker processes: the event loop stays free while pocketsphinx decodes."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np

from pipelines.services.sphinx import DecoderPool, PocketsphinxRecognizer
from tests.pipelines.agent_call import caller_pcm


async def test_a_segment_decodes_in_a_worker_process_with_the_same_words() -> None:
    pool = DecoderPool(1)
    try:
        text = await pool.transcribe(caller_pcm("no thank you goodbye"))
        assert pool.pids() and os.getpid() not in pool.pids()
        assert "goodbye" in text
    finally:
        pool.close()


def test_word_times_are_in_order_within_the_audio_and_name_the_words() -> None:
    pcm = caller_pcm("no thank you goodbye")
    rec = PocketsphinxRecognizer()
    words = rec.words(pcm)
    ends = [end for _, end in words]
    assert ends == sorted(ends) and 0 < ends[-1] <= len(pcm) / 2 / 8 + 10  # ms, 8 kHz int16
    spoken = [w.split("(")[0] for w, _ in words if not w.startswith(("<", "["))]
    assert " ".join(spoken) == rec.transcribe(pcm) and "goodbye" in spoken
    assert rec.words(b"") == []


async def test_a_long_noisy_segment_never_stalls_the_event_loop() -> None:
    """pocketsphinx holds the GIL while it decodes: in a thread, these 3 s of loud noise kept the loop
    from running for as long as the decode took (seconds). In the worker the loop ticks on."""
    pool = DecoderPool(1)
    pool.warm()
    noise = np.random.default_rng(0).normal(0, 3000, 8000 * 3).astype(np.int16).tobytes()
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        t0 = time.perf_counter()
        await pool.transcribe(noise)
        took = time.perf_counter() - t0
    finally:
        done = True
        await tick
        pool.close()
    assert took > 0.5  # the decode was real work (seconds on this CPU) ...
    assert max(gaps) < min(0.5, took / 2)  # ... and the loop never waited for it


async def test_a_dead_worker_loses_one_segment_and_the_pool_recovers() -> None:
    pool = DecoderPool(1)
    try:
        assert "goodbye" in await pool.transcribe(caller_pcm("no thank you goodbye"))
        (pid,) = pool.pids()
        os.kill(pid, 9)
        await asyncio.sleep(0.2)
        assert await pool.transcribe(caller_pcm("hello")) == ""
        assert "goodbye" in await pool.transcribe(caller_pcm("no thank you goodbye"))
    finally:
        pool.close()


async def test_closing_the_pool_mid_decode_ends_the_segment_quietly_and_starts_no_new_worker() -> None:
    pool = DecoderPool(1)
    pool.warm()
    noise = np.random.default_rng(1).normal(0, 3000, 8000 * 3).astype(np.int16).tobytes()
    decode = asyncio.create_task(pool.transcribe(noise))
    await asyncio.sleep(0.5)
    pool.close()
    assert await asyncio.wait_for(decode, 10) == ""
    assert pool.pids() == []


async def test_closing_the_pool_wakes_a_segment_still_waiting_for_a_worker() -> None:
    """A segment from a plain thread (as the Deepgram stand-in sends them) queued behind a busy worker when
    the pool closes gets '' at once; its thread used to wait forever on the old queue."""
    pool = DecoderPool(1)
    pool.warm()
    noise = np.random.default_rng(2).normal(0, 3000, 8000 * 3).astype(np.int16).tobytes()
    busy = asyncio.create_task(pool.transcribe(noise))
    await asyncio.sleep(0.3)
    waiting = asyncio.create_task(asyncio.to_thread(pool.transcribe_blocking, noise))
    await asyncio.sleep(0.3)
    pool.close()
    assert await asyncio.wait_for(waiting, 5) == ""
    assert await asyncio.wait_for(busy, 10) == ""
