"""Beeps at the greeting's edge, on a wider grid than the tests: misses and onset error per offset.

Why: issue 11 item 4. A tone that starts 0-40 ms after the greeting's last word, or overlaps its end,
must be found like any other beep. This sweeps 6 voices (espeak-ng and flite) x the test grid's
frequencies, durations and SNRs x 6 offsets, speech ~6 dB above the beep, through the telephone
channel, and prints what it measured (a detection = exactly beep + beep_end within the grid's 60 ms
onset / 30 ms end tolerances). Takes a few minutes on 2 cores.

Usage: python scripts/bench_beep_edge.py
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from callgate import synth
from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, to_int16
from processors.beep import BeepAnalyzer

GREETINGS = (
    ("Please leave a message after the tone", "en-us+m3", "espeak-ng"),
    ("Sorry I missed you, talk to you soon", "en-us+f3", "espeak-ng"),
    ("Please leave a message after the beep", "slt", "flite"),
    ("You have reached the Miller family, I'll call you back now", "kal", "flite"),
    ("Leave a message", "awb", "flite"),
    ("Hi, it's Jo, leave me a message, bye", "en-gb", "espeak-ng"),
)
FREQS = (400.0, 650.0, 700.0, 1000.0, 1400.0, 2000.0)
DURS = (0.15, 0.3, 0.6, 1.0)
SNRS = (10.0, 20.0, 40.0)
OFFSETS_MS = (-50, -25, 0, 10, 20, 40)


def trimmed(text: str, voice: str, engine: str) -> np.ndarray:
    x = synth.speech(text, voice=voice, engine=engine)
    idx = np.nonzero(np.abs(x) > 0.01 * np.max(np.abs(x)))[0]
    return x[idx[0] : idx[-1] + 1]


def main() -> None:
    voices = [(g[1], trimmed(*g)) for g in GREETINGS]
    lead = int(0.3 * SAMPLE_RATE)
    total: Counter[int] = Counter()
    missed: Counter[tuple[int, str, float]] = Counter()
    errors: dict[int, list[float]] = {d: [] for d in OFFSETS_MS}
    for hz, secs, snr, d_ms, (name, v) in itertools.product(FREQS, DURS, SNRS, OFFSETS_MS, voices):
        beep = synth.tone(hz, secs, 0.3)
        onset = lead + len(v) + d_ms * SAMPLE_RATE // 1000
        x = np.zeros(onset + len(beep) + int(0.6 * SAMPLE_RATE), np.float32)
        x[lead : lead + len(v)] += v * (2 * synth.rms(beep) / synth.active_rms(v))
        x[onset : onset + len(beep)] += beep
        noise = synth.pink_noise(len(x) / SAMPLE_RATE, seed=int(hz) + d_ms + int(snr) + 100)
        pcm = to_int16(synth.telephone_channel(synth.mix_at_snr(x, noise, snr, signal_rms=synth.rms(beep))))
        a, ev = BeepAnalyzer(), []
        for i in range(0, len(pcm), FRAME_SAMPLES):
            ev += a.process(pcm[i : i + FRAME_SAMPLES])
        ev += a.flush()
        on_ms = onset * 1000 / SAMPLE_RATE
        total[d_ms] += 1
        ok = (
            [e.kind for e in ev] == ["beep", "beep_end"]
            and abs(ev[0].onset_ms - on_ms) <= 60
            and abs(ev[1].t_ms - on_ms - secs * 1000) <= 30
        )
        if ok:
            errors[d_ms].append(abs(ev[0].onset_ms - on_ms))
        else:
            missed[(d_ms, name, hz)] += 1
    print(f"{len(voices)} voices x {len(FREQS)} freqs x {len(DURS)} durations x {len(SNRS)} SNRs per offset")
    print(f"{'offset ms':>10}{'detected':>12}{'onset err mean':>16}{'max':>8}")
    for d in OFFSETS_MS:
        e = errors[d]
        print(f"{d:>10}{f'{len(e)}/{total[d]}':>12}{np.mean(e):>16.1f}{max(e):>8.1f}")
    for (d, name, hz), n in sorted(missed.items()):
        print(f"  missed: offset {d} ms, voice {name}, {hz:.0f} Hz: {n}")


if __name__ == "__main__":
    main()
