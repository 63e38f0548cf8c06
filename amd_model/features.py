"""Streaming log-mel features for 8 kHz telephone audio (numpy only: this is on the serving path).

Why streaming: the AMD model sees 100 ms steps as they arrive from Twilio, and its features must be
bit-for-bit the ones it was trained on from whole files. Each 10 ms frame ends on a hop boundary and
looks back one 25 ms window, so a frame never needs future samples: a 800-sample step yields exactly
10 frames, and the carry-over between steps is just the last WIN - HOP samples. Offline computation
is the same code on a zero-prefixed signal, so streaming == offline (tests/amd_model/test_features.py).

Normalisation is NOT done here: fixed mean/std constants live inside the ONNX graph (computed once on
the training corpus), so nothing depends on per-file statistics or the future.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 8000
WIN = 200  # 25 ms
HOP = 80  # 10 ms
N_FFT = 256
N_MELS = 40
FMIN = 60.0
FMAX = 3800.0
LOG_FLOOR = 1e-6  # power floor (int16 full scale = 1.0) so digital silence stays finite
FRAMES_PER_STEP = 10
STEP_SAMPLES = HOP * FRAMES_PER_STEP  # 800 = 100 ms


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """Triangular HTK-style mel filters, shape (n_fft // 2 + 1, n_mels), float32."""
    mels = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz = _mel_to_hz(mels)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((bins.size, n_mels), dtype=np.float64)
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (bins - lo) / max(mid - lo, 1e-9)
        down = (hi - bins) / max(hi - mid, 1e-9)
        fb[:, i] = np.maximum(0.0, np.minimum(up, down))
    return fb.astype(np.float32)


_FB = mel_filterbank()
_WINDOW = np.hanning(WIN + 2)[1:-1].astype(np.float32)  # symmetric Hann without zero endpoints


def config() -> dict[str, float | int | str]:
    """Feature settings written into amd.json so a model and its features can be checked for a match."""
    return {
        "sample_rate": SAMPLE_RATE,
        "win": WIN,
        "hop": HOP,
        "n_fft": N_FFT,
        "n_mels": N_MELS,
        "fmin": FMIN,
        "fmax": FMAX,
        "log_floor": LOG_FLOOR,
        "frames_per_step": FRAMES_PER_STEP,
        "step_samples": STEP_SAMPLES,
        "kind": "log-mel, causal frames (window ends on hop boundary), zero carry at call start",
    }


def _frames_to_logmel(frames: np.ndarray) -> np.ndarray:
    """(n, WIN) float32 frames -> (n, N_MELS) float32 natural-log mel power."""
    spec = np.fft.rfft(frames * _WINDOW, n=N_FFT, axis=-1)
    power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)
    return np.log(power @ _FB + LOG_FLOOR).astype(np.float32)


def _as_float(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return np.asarray(pcm, dtype=np.float32)


def logmel(pcm: np.ndarray) -> np.ndarray:
    """Offline features for a whole call: (len(pcm) // HOP, N_MELS), identical to streaming."""
    x = np.concatenate([np.zeros(WIN - HOP, dtype=np.float32), _as_float(pcm)])
    n = (x.size - (WIN - HOP)) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    return _frames_to_logmel(x[idx])


@dataclass
class FeatureStream:
    """Per-call carry-over for streaming features: the last WIN - HOP samples seen."""

    carry: np.ndarray = field(default_factory=lambda: np.zeros(WIN - HOP, dtype=np.float32))

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Feed samples (a multiple of HOP, normally one 800-sample step) -> (len // HOP, N_MELS)."""
        x = _as_float(pcm)
        if x.size % HOP:
            raise ValueError(f"push() needs a multiple of {HOP} samples, got {x.size}")
        buf = np.concatenate([self.carry, x])
        n = x.size // HOP
        idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
        self.carry = buf[-(WIN - HOP) :].copy()
        if n == 0:
            return np.zeros((0, N_MELS), dtype=np.float32)
        return _frames_to_logmel(buf[idx])
