"""Audio primitives of the corpus: 8 kHz WAV I/O, trimming, noise, and the channel effects (GSM and
AMR-NB codec round trips through sox, room reverb, handset AGC).

Why apart: they know nothing of calls or voices, so the voices, the call assembly and the real-human
pickups (real_humans.py) share one implementation of each.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

SR = 8000


def read_wav(path: Path) -> np.ndarray:
    """Any PCM WAV -> float32 mono at 8 kHz."""
    from callgate.audio import load_audio

    return load_audio(path).astype(np.float32) / 32768.0


def write_wav(path: Path, x: np.ndarray) -> None:
    """float32 [-1, 1] -> 8 kHz int16 WAV."""
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def trim(x: np.ndarray, thresh_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing silence (TTS pads its output) so segment bounds are real speech bounds."""
    if x.size == 0:
        return x
    f = 80
    n = x.size // f
    if n == 0:
        return x
    e = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / (e.max() + 1e-12)) > thresh_db)[0]
    if on.size == 0:
        return x[:0]
    return x[on[0] * f : (on[-1] + 1) * f]


def speech_bounds(x: np.ndarray, thresh_db: float = -35.0) -> tuple[int, int] | None:
    """(start, end) sample of the voiced region, for recordings we did not make (dev greetings)."""
    y = trim(x, thresh_db)
    if y.size == 0:
        return None
    f = 80
    n = x.size // f
    e = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / (e.max() + 1e-12)) > thresh_db)[0]
    return int(on[0] * f), int((on[-1] + 1) * f)


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """White, pink or brown noise at unit RMS (FFT shaping; deterministic given rng)."""
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "white" or n < 16:
        return w / (rms(w) + 1e-9)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    y = np.fft.irfft(spec, n).astype(np.float32)
    return y / (rms(y) + 1e-9)


def gsm_roundtrip(x: np.ndarray, tmp: Path) -> np.ndarray:
    """GSM 06.10 full-rate codec round trip through sox (mobile legs)."""
    src, gsm, out = tmp / "g_in.wav", tmp / "g.gsm", tmp / "g_out.wav"
    write_wav(src, np.clip(x, -1, 1))
    r1 = subprocess.run(["sox", "-D", str(src), "-r", "8000", str(gsm)], capture_output=True)
    r2 = subprocess.run(["sox", "-D", str(gsm), "-e", "signed", "-b", "16", str(out)], capture_output=True)
    if r1.returncode or r2.returncode:
        return x
    y = read_wav(out)
    return y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))


def amr_roundtrip(x: np.ndarray, tmp: Path, mode: int) -> np.ndarray:
    """AMR-NB codec round trip through sox (mode 0..7 = 4.75..12.2 kbit/s; mobile networks)."""
    src, amr, out = tmp / "a_in.wav", tmp / "a.amr-nb", tmp / "a_out.wav"
    write_wav(src, np.clip(x, -1, 1))
    r1 = subprocess.run(["sox", "-D", str(src), "-C", str(mode), str(amr)], capture_output=True)
    r2 = subprocess.run(["sox", "-D", str(amr), "-e", "signed", "-b", "16", str(out)], capture_output=True)
    if r1.returncode or r2.returncode:
        return x
    y = read_wav(out)
    return y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))


def room_reverb(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A room (or a speakerphone across it): convolve with an exponentially decaying noise tail,
    RT60 0.15-0.8 s, direct-to-reverberant ratio 0-12 dB."""
    rt60 = float(rng.uniform(0.15, 0.8))
    drr = float(rng.uniform(0.0, 12.0))
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * SR)] = 0.0
    tail *= 10 ** (-drr / 20) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    ir = tail.astype(np.float64)
    ir[0] = 1.0
    m = x.size + n
    nfft = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: x.size]
    y = y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))
    return y.astype(np.float32), f"reverb rt60 {rt60:.2f} drr {drr:.0f}"


def phone_agc(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A handset's automatic gain control: per-10 ms gain toward a target level, fast attack and slow
    release, up to 6-20 dB of boost, so pauses and line noise come up between words."""
    f = 80
    nfr = x.size // f
    if nfr < 2:
        return x, "agc"
    env = np.sqrt(np.mean(x[: nfr * f].reshape(nfr, f) ** 2, axis=1) + 1e-10)
    target = float(np.percentile(env, 90))
    max_gain = 10 ** (float(rng.uniform(6, 20)) / 20)
    release = float(rng.uniform(0.2, 1.5))  # s for the gain to rise
    up = 1 - np.exp(-0.01 / release)
    want = np.clip(target / env, 0.25, max_gain)
    g = np.empty(nfr)
    cur = 1.0
    for k in range(nfr):
        cur = want[k] if want[k] < cur else cur + (want[k] - cur) * up
        g[k] = cur
    gain = np.interp(np.arange(x.size), np.arange(nfr) * f + f / 2, g)
    y = x * gain
    return (y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))).astype(np.float32), (
        f"agc +{20 * np.log10(max_gain):.0f}dB rel {release:.1f}s"
    )
