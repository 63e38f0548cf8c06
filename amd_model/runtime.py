"""Serving-side AMD inference: numpy + onnxruntime only (torch must never be imported here).

One `AmdModel` (one InferenceSession, thread-safe for run()) serves every call; each call owns an
`AmdState` (feature carry-over + GRU state), so calls never leak into each other. `step()` takes
exactly one 100 ms chunk of 8 kHz int16 audio and returns class probabilities; `run()` is the same
computation over a whole file for offline evaluation and tuning.

`python -m amd_model.runtime --bench` prints the median cost of one step (features + ONNX).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from amd_model import features

DEFAULT_MODEL_PATH: Path = Path(__file__).resolve().parent / "amd.onnx"
STEP_SAMPLES = 800  # 100 ms at 8 kHz
assert STEP_SAMPLES == features.STEP_SAMPLES


class ModelNotFoundError(FileNotFoundError):
    """The ONNX file or its amd.json metadata is missing (rebuild with `callgate train`)."""


@dataclass
class AmdState:
    """Opaque per-call state: feature carry-over and the recurrent state of the network."""

    stream: features.FeatureStream
    rnn: np.ndarray  # (1, 1, hidden) float32
    steps: int = 0
    last_probs: np.ndarray | None = field(default=None, repr=False)


class AmdModel:
    """A loaded AMD model: `classes` from amd.json, `step()` per 100 ms, `run()` per file."""

    classes: tuple[str, ...]

    def __init__(self, path: Path | None = None, *, intra_op_threads: int = 1) -> None:
        path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            raise ModelNotFoundError(f"AMD model not found: {path} (train it with `callgate train`)")
        if not meta_path.is_file():
            raise ModelNotFoundError(f"AMD model metadata not found: {meta_path}")
        self.path = path
        self.meta: dict = json.loads(meta_path.read_text())
        self.classes = tuple(self.meta["classes"])
        want = self.meta.get("features", {})
        have = features.config()
        for key in ("sample_rate", "win", "hop", "n_fft", "n_mels", "fmin", "fmax", "frames_per_step"):
            if key in want and want[key] != have[key]:
                raise ValueError(f"{meta_path}: feature '{key}'={want[key]} but features.py has {have[key]}")
        self.hidden = int(self.meta["state_shape"][-1])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def new_state(self) -> AmdState:
        """Fresh state for a new call (zero audio history, zero RNN state)."""
        return AmdState(stream=features.FeatureStream(), rnn=np.zeros((1, 1, self.hidden), dtype=np.float32))

    def step(self, pcm: np.ndarray, state: AmdState) -> np.ndarray:
        """One 100 ms step: int16 (STEP_SAMPLES,) -> probs (n_classes,) float32; updates `state`."""
        pcm = np.asarray(pcm)
        if pcm.shape != (STEP_SAMPLES,):
            raise ValueError(f"step() needs exactly {STEP_SAMPLES} samples, got shape {pcm.shape}")
        feats = state.stream.push(pcm)[None]  # (1, 10, 40)
        probs, rnn = self.session.run(None, {"feats": feats, "state": state.rnn})
        state.rnn = rnn
        state.steps += 1
        state.last_probs = probs[0]
        return probs[0]

    def step_batch(self, pcms: list[np.ndarray], states: list[AmdState]) -> list[np.ndarray]:
        """`step()` for many calls with one ONNX run along the batch axis (each row is its own call)."""
        if len(pcms) == 1:
            return [self.step(pcms[0], states[0])]
        for pcm in pcms:
            if np.shape(pcm) != (STEP_SAMPLES,):
                raise ValueError(f"step() needs exactly {STEP_SAMPLES} samples, got shape {np.shape(pcm)}")
        feats = np.stack([st.stream.push(np.asarray(pcm)) for pcm, st in zip(pcms, states, strict=True)])
        rnn = np.concatenate([st.rnn for st in states], axis=1)
        probs, rnn = self.session.run(None, {"feats": feats, "state": rnn})
        for i, st in enumerate(states):
            st.rnn = rnn[:, i : i + 1, :]
            st.steps += 1
            st.last_probs = probs[i]
        return list(probs)

    def run(self, pcm: np.ndarray) -> np.ndarray:
        """Whole call -> (n_steps, n_classes); a trailing partial step is dropped (as streaming would)."""
        pcm = np.asarray(pcm)
        n = pcm.size // STEP_SAMPLES
        state = self.new_state()
        out = np.zeros((n, len(self.classes)), dtype=np.float32)
        for i in range(n):
            out[i] = self.step(pcm[i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES], state)
        return out


def _bench(path: Path | None, seconds: float) -> None:
    model = AmdModel(path)
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(seconds * 8000)) * 3000).astype(np.int16)
    state = model.new_state()
    n = pcm.size // STEP_SAMPLES
    for i in range(min(n, 20)):  # warm-up
        model.step(pcm[i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES], state)
    times = []
    state = model.new_state()
    for i in range(n):
        chunk = pcm[i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES]
        t0 = time.perf_counter()
        model.step(chunk, state)
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1000
    print(
        f"AMD step cost over {n} steps (features + ONNX, 1 thread): median {np.median(t):.3f} ms, "
        f"p90 {np.percentile(t, 90):.3f} ms, p99 {np.percentile(t, 99):.3f} ms; "
        f"model {model.path.stat().st_size / 1e6:.2f} MB, classes {model.classes}"
    )


def main() -> None:
    """CLI: `python -m amd_model.runtime --bench [--model PATH]`."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bench", action="store_true", help="time one 100 ms step (features + ONNX)")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    if args.bench:
        _bench(args.model, args.seconds)
    else:
        p.print_help()


if __name__ == "__main__":
    main()
