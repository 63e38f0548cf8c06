"""The exported ensemble step graph serves the same probabilities as the members it averages.

Needs torch (the `train` extra); skipped where only the serving dependencies are installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from amd_model import features  # noqa: E402
from amd_model.runtime import STEP_SAMPLES, AmdModel  # noqa: E402
from amd_model.tools import train  # noqa: E402
from amd_model.tools.net import AmdEnsemble, AmdNet  # noqa: E402


def _member(seed: int, hidden: int) -> AmdNet:
    torch.manual_seed(seed)
    return AmdNet(len(train.CLASSES), hidden=hidden, width=32).eval()


def test_exported_ensemble_streams_the_mean_of_its_members(tmp_path: Path) -> None:
    members = [_member(0, 8), _member(1, 12)]
    model = AmdEnsemble(members)
    info = train.export(model, tmp_path / "amd.onnx", model.hidden)
    train.write_meta(tmp_path, info)

    served = AmdModel(tmp_path / "amd.onnx")
    assert served.hidden == 20  # one state array per call: the members' states side by side
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(STEP_SAMPLES * 12) * 2000).astype(np.int16)
    got = served.run(pcm)

    feats = features.logmel(pcm).reshape(12, features.FRAMES_PER_STEP, features.N_MELS)
    x = torch.from_numpy(feats)[None]
    with torch.no_grad():
        each = [torch.softmax(m(x)[0], -1)[0].numpy() for m in members]
    np.testing.assert_allclose(got, (each[0] + each[1]) / 2, atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the average is not one member in disguise
