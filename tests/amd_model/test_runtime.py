"""The shipped AMD model through the serving path (numpy + onnxruntime only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from amd_model.runtime import DEFAULT_MODEL_PATH, STEP_SAMPLES, AmdModel

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason="amd_model/amd.onnx not built yet")


def _call(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 8000)) / 8000
    x = 0.01 * rng.standard_normal(t.size)
    on = (t > 0.5) & (t < 1.1)  # a voiced-ish burst, then silence
    x[on] += 0.3 * np.sin(2 * np.pi * 180 * t[on]) * (1 + np.sin(2 * np.pi * 4 * t[on]))
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def model() -> AmdModel:
    return AmdModel()


def test_classes_and_contract(model: AmdModel) -> None:
    for c in ("human", "machine", "ivr", "carrier_intercept"):
        assert c in model.classes
    assert STEP_SAMPLES == 800
    assert DEFAULT_MODEL_PATH.stat().st_size <= 5 * 1024 * 1024


def test_step_probs_sum_to_one(model: AmdModel) -> None:
    st = model.new_state()
    pcm = _call(1.0, 0)
    for i in range(pcm.size // STEP_SAMPLES):
        p = model.step(pcm[i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES], st)
        assert p.shape == (len(model.classes),)
        assert p.dtype == np.float32
        assert abs(float(p.sum()) - 1.0) < 1e-4


def test_stepping_equals_run(model: AmdModel) -> None:
    pcm = _call(3.05, 1)  # trailing partial step is dropped by both
    whole = model.run(pcm)
    st = model.new_state()
    stepped = np.stack(
        [
            model.step(pcm[i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES], st)
            for i in range(pcm.size // STEP_SAMPLES)
        ]
    )
    assert whole.shape == (30, len(model.classes))
    np.testing.assert_allclose(stepped, whole, atol=1e-6)


def test_interleaved_calls_are_independent(model: AmdModel) -> None:
    a, b = _call(2.0, 2), _call(2.0, 3) // 3
    ra, rb = model.run(a), model.run(b)
    sa, sb = model.new_state(), model.new_state()
    ia, ib = [], []
    for i in range(a.size // STEP_SAMPLES):
        sl = slice(i * STEP_SAMPLES, (i + 1) * STEP_SAMPLES)
        ia.append(model.step(a[sl], sa))
        ib.append(model.step(b[sl], sb))
    np.testing.assert_allclose(np.stack(ia), ra, atol=1e-6)
    np.testing.assert_allclose(np.stack(ib), rb, atol=1e-6)


def test_wrong_step_size_and_missing_model(tmp_path: Path, model: AmdModel) -> None:
    with pytest.raises(ValueError):
        model.step(np.zeros(799, dtype=np.int16), model.new_state())
    with pytest.raises(FileNotFoundError, match="not found"):
        AmdModel(tmp_path / "nope.onnx")


def test_serving_path_works_with_torch_blocked() -> None:
    code = textwrap.dedent(
        """
        import sys
        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked on the serving path")
                return None
        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        from amd_model.runtime import AmdModel, STEP_SAMPLES
        m = AmdModel()
        p = m.step(np.zeros(STEP_SAMPLES, dtype=np.int16), m.new_state())
        assert abs(float(p.sum()) - 1) < 1e-4
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
