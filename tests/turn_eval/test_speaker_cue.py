"""The speaker-cue measurement's features: window levels and level-free MFCCs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from turn_eval.speaker_cue import window_mfcc


def test_window_mfcc_gives_the_level_and_level_free_spectral_shape():
    t = np.arange(8000) / 8000
    tone = (0.1 * 32768 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    level, mfcc = window_mfcc(tone)
    assert mfcc.shape == (len(tone) // 256, 12)
    assert np.allclose(level, 10 * np.log10(0.1**2 / 2), atol=0.3)  # a sine's RMS
    noise = np.random.default_rng(0).normal(0, 1000, 8000)
    quiet_level, quiet = window_mfcc(noise.astype(np.int16))
    loud_level, loud = window_mfcc((noise * 4).astype(np.int16))
    assert np.allclose(loud_level - quiet_level, 20 * np.log10(4), atol=0.1)
    assert np.allclose(loud, quiet, atol=0.05)  # c0 is left out: the shape does not move with level
    assert np.linalg.norm(quiet.mean(0) - mfcc.mean(0)) > 5  # a tone's shape is not white noise's


def test_speaker_cue_on_a_missing_or_too_small_set_says_so_without_a_traceback(tmp_path, monkeypatch):
    from turn_eval import speaker_cue

    (tmp_path / "labels.json").write_text('{"files": {}}')
    for folder, needle in ((tmp_path / "nope", "no labels.json"), (tmp_path, "needs 2 or more")):
        monkeypatch.setattr(sys, "argv", ["speaker_cue", str(folder)])
        with pytest.raises(SystemExit) as e:
            speaker_cue.main()
        assert needle in str(e.value.code)
