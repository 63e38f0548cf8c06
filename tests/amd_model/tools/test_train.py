"""Training augmentations, on arrays (numpy only: no torch needed)."""

from __future__ import annotations

import numpy as np

from amd_model import features
from amd_model.tools.train import vtlp_source_bands, warp_bands


def test_vtlp_with_alpha_one_leaves_the_bands_unchanged() -> None:
    f = np.random.default_rng(0).normal(size=(3, features.FRAMES_PER_STEP, features.N_MELS)).astype(np.float32)
    np.testing.assert_allclose(warp_bands(f, vtlp_source_bands(1.0)), f, atol=1e-5)


def test_vtlp_moves_a_formant_up_for_alpha_above_one_and_down_below_it() -> None:
    f = np.full((1, features.N_MELS), -10.0, np.float32)
    f[0, 18] = 0.0  # one formant peak in band 18
    up, down = (int(np.argmax(warp_bands(f, vtlp_source_bands(a))[0])) for a in (1.12, 0.88))
    assert up > 18 > down


def test_vtlp_keeps_the_band_edges_in_place() -> None:
    for a in (0.88, 1.12):
        src = vtlp_source_bands(a)
        assert src[-1] == features.N_MELS - 1
        assert np.all(np.diff(src) >= 0) and src.min() >= 0
