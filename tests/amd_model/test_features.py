"""Streaming log-mel must equal the offline computation, or the served model sees other features than it learnt."""

from __future__ import annotations

import numpy as np
import pytest

from amd_model import features


def _pcm(seconds: float = 2.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 8000)) / 8000
    x = 0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size)
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


def test_step_yields_ten_frames() -> None:
    fs = features.FeatureStream()
    out = fs.push(np.zeros(features.STEP_SAMPLES, dtype=np.int16))
    assert out.shape == (features.FRAMES_PER_STEP, features.N_MELS)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_streaming_equals_offline() -> None:
    pcm = _pcm()
    n = pcm.size // features.STEP_SAMPLES
    offline = features.logmel(pcm[: n * features.STEP_SAMPLES])
    fs = features.FeatureStream()
    streamed = np.concatenate(
        [fs.push(pcm[i * features.STEP_SAMPLES : (i + 1) * features.STEP_SAMPLES]) for i in range(n)]
    )
    assert streamed.shape == offline.shape == (n * features.FRAMES_PER_STEP, features.N_MELS)
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-4)


def test_uneven_chunks_equal_offline() -> None:
    pcm = _pcm(1.6, seed=1)
    offline = features.logmel(pcm)
    fs = features.FeatureStream()
    parts, i = [], 0
    for size in [80, 800, 160, 2400, 800, 80 * 47]:
        parts.append(fs.push(pcm[i : i + size]))
        i += size
    np.testing.assert_allclose(np.concatenate(parts), offline[: sum(p.shape[0] for p in parts)], atol=1e-4)


def test_rejects_partial_hop() -> None:
    with pytest.raises(ValueError):
        features.FeatureStream().push(np.zeros(100, dtype=np.int16))


def test_tone_lands_in_right_band() -> None:
    f = features.logmel(_pcm(0.5))
    fb = features.mel_filterbank()
    centre = np.fft.rfftfreq(features.N_FFT, 1 / 8000)[fb.argmax(0)]
    assert abs(centre[f[20:].mean(0).argmax()] - 700) < 120
