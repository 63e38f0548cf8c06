"""Print BeepAnalyzer's CPU cost per 20 ms frame (live path) and per second of audio (replay path).

Why: the detector runs inline in Pipecat's input task, so it must stay far below 1 ms per 20 ms frame.
Usage: python scripts/bench_beep.py [seconds]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from callgate import synth
from callgate.audio import FRAME_SAMPLES, to_int16
from processors.beep import BeepAnalyzer


def bench(secs: float = 30.0) -> None:
    """Feed speech-like noise plus beeps in 20 ms frames and in one block; print the timings."""
    x = synth.concat(
        synth.pink_noise(secs / 2, rms=0.05, seed=1),
        synth.tone(1000.0, 0.5, 0.3),
        synth.harmonic_vowel(220.0, secs / 2 - 0.5, vibrato_hz=5.0, vibrato_cents=30.0),
    )
    pcm = to_int16(synth.telephone_channel(x))
    frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    a = BeepAnalyzer()
    costs = []
    cpu0 = time.process_time()
    for f in frames:
        t0 = time.perf_counter()
        a.process(f)
        costs.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(frames) * 1e3
    c = np.asarray(costs) * 1e3
    print(f"live: CPU time {cpu:.3f} ms per 20 ms frame (wall times below include waiting on a busy machine)")
    print(
        f"live: {len(frames)} x 20 ms frames: mean {c.mean():.3f} ms, p99 {np.percentile(c, 99):.3f} ms, max {c.max():.3f} ms"
    )
    a.reset()
    t0 = time.perf_counter()
    a.process(pcm)
    dt = time.perf_counter() - t0
    print(
        f"replay: {len(pcm) / 8000:.1f} s in one block: {dt * 1e3:.1f} ms ({dt / (len(pcm) / 8000) * 1e3:.2f} ms per s of audio)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", nargs="?", type=float, default=30.0, help="audio to time (default 30)")
    args = ap.parse_args()
    if args.seconds <= 0:
        ap.error("seconds must be > 0")
    bench(args.seconds)
