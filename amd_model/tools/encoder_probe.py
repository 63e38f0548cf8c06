"""Does a pre-trained speech encoder generalize across voices better than our log-mels? (issue 11, item 3)

    python -m amd_model.tools.encoder_probe CORPUS [--times 1.0 2.0] [--window-s 2.0] [--cache FILE]

The encoder is the one Pipecat already ships: Smart-Turn v3.2's Whisper-tiny encoder (pre-trained on
real speech, fine-tuned for end of turn; `pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`,
installed with pipecat-ai, nothing downloaded). `encoder_session` cuts it, in memory, to a short window
(its 8 s input costs ~41 ms per run on this CPU; a 2 s window ~7.5 ms, so one run per call fits the
<= 1 ms per 100 ms step budget on average) and exposes its attention-pooled and mean encoder states.

A linear probe measures the representation, not a product: for every human or machine call of a
corpus (`callgate corpus build --real-pool all`), the audio up to `t` seconds after speech onset (the
last `window_s` of it) is embedded once, and an L2 logistic regression is trained without one voice
family and tested on it (leave-one-family-out), and over the real greetings by 5-fold cross-validation
by file (as amd_model.tools.folds splits them). The same probe on the mean and standard deviation of
the AMD net's own log-mel features (amd_model.features.logmel) over the same audio is the baseline.
A probe sees one snapshot and no timing: it cannot tell a business pickup that stops and waits from a
greeting that goes on, which the decision layer does; its business figure is shown for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from amd_model.features import logmel
from amd_model.tools.folds import cv_held, family, real_file, real_twins
from callgate.audio import SAMPLE_RATE, load_audio

POOLED = "sum_1_DequantizeLinear_Output"  # attention-pooled encoder state (384), the classifier's input
STATES = "layer_norm_8_DequantizeLinear_Output"  # last encoder layer (frames x 384)
_POSITIONS = "inner.encoder.embed_positions.weight"


def smart_turn_path() -> Path:
    from pipecat.audio.turn.smart_turn import data

    return Path(data.__file__).with_name("smart-turn-v3.2-cpu.onnx")


@lru_cache(maxsize=4)
def encoder_session(window_s: float = 2.0) -> Any:
    """Smart-Turn v3.2 cut to `window_s` of input (Whisper mel frames at 100/s; the encoder halves
    them): the last positional embeddings are kept, since Pipecat right-aligns audio in its 8 s window."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    m = onnx.load(str(smart_turn_path()))
    n_mel = int(round(window_s * 100))
    full = next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name == _POSITIONS).shape[0]
    n_enc = n_mel // 2
    if not 0 < n_enc <= full:
        raise ValueError(f"window_s must be in (0, {full / 50:.0f}] s")
    for k, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if init.name == _POSITIONS:
            m.graph.initializer[k].CopyFrom(numpy_helper.from_array(a[-n_enc:].copy(), init.name))
        elif a.dtype == np.int64 and a.size <= 4 and full in a.tolist():  # reshape targets naming the length
            m.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.where(a == full, n_enc, a), init.name))
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = n_mel
    del m.graph.value_info[:]
    for name in (POOLED, STATES):
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def embed(pcm: np.ndarray, window_s: float = 2.0) -> np.ndarray:
    """768 numbers for the last `window_s` of 8 kHz int16 audio: pooled and mean encoder states."""
    import soxr
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    x = soxr.resample(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, 16000, quality="HQ")
    n = int(window_s * 16000)
    x = x[-n:] if len(x) >= n else np.pad(x, (n - len(x), 0))
    feats = compute_whisper_log_mel_features(x, do_normalize=True)[None, :, : int(round(window_s * 100))]
    _logit, pooled, states = encoder_session(window_s).run(None, {"input_features": feats.astype(np.float32)})
    return np.concatenate([pooled[0], states[0].mean(axis=0)])


def logmel_stats(pcm: np.ndarray) -> np.ndarray:
    """The baseline representation: mean and standard deviation of the AMD net's own log-mels."""
    lm = logmel(pcm)
    return np.concatenate([lm.mean(axis=0), lm.std(axis=0)])


def _one(args: tuple[str, float, tuple[float, ...], float]) -> dict[str, np.ndarray]:
    path, onset_ms, times, window_s = args
    pcm = load_audio(path)
    out = {}
    for t in times:
        end = int((onset_ms / 1000 + t) * SAMPLE_RATE)
        out[f"encoder@{t:g}s"] = embed(pcm[:end], window_s)
        out[f"logmel@{t:g}s"] = logmel_stats(pcm[max(0, end - int(window_s * SAMPLE_RATE)) : end])
    return out


def extract(corpus: Path, metas: Sequence[dict], times: Sequence[float], window_s: float) -> dict[str, np.ndarray]:
    """Embed every call (2 worker processes, a progress bar)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [(str(corpus / m["file"]), float(m.get("speech_onset_ms") or 0), tuple(times), window_s) for m in metas]
    with get_context("spawn").Pool(2) as pool:
        rows = list(tqdm(pool.imap(_one, jobs, chunksize=8), total=len(jobs), desc="embedding calls"))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def corpus_embeddings(corpus: Path, metas: Sequence[dict], ids: Sequence[int], times: Sequence[float],
                      window_s: float, cache: Path | None = None) -> dict[str, np.ndarray]:
    """`extract` for the calls `ids`, rows in that order; reused from `cache` when it holds exactly those
    calls and every time asked for, else computed and written there."""
    want = [f"{kind}@{t:g}s" for t in times for kind in ("encoder", "logmel")]
    if cache and cache.is_file():
        feats = dict(np.load(cache))
        if "idx" in feats and np.array_equal(feats["idx"], ids) and all(k in feats for k in want):
            return feats
    feats = {"idx": np.asarray(ids), **extract(corpus, [metas[i] for i in ids], times, window_s)}
    if cache:
        np.savez(cache, **feats)
    return feats


def onset_embeddings(items: dict[str, Any], keys: Sequence[str], ref_classes: Sequence[str], times: Sequence[float],
                     window_s: float) -> dict[str, tuple[float | None, list[np.ndarray | None]]]:
    """For each test call: its live-VAD speech onset and the embedding `t` s after it, for every time
    (None where the VAD heard no speech), computed once for all folds."""
    from tqdm import tqdm

    from amd_model.tools.folds import speech_anchors

    out: dict[str, tuple[float | None, list[np.ndarray | None]]] = {}
    for key in tqdm(sorted(keys), desc="test calls (encoder)", unit="call"):
        it = items[key]
        onset, _ = speech_anchors(it, ref_classes)
        if onset is None:
            out[key] = (None, [None] * len(times))
            continue
        pcm = load_audio(it.call.path)
        out[key] = (onset, [embed(pcm[: int((onset / 1000 + t) * SAMPLE_RATE)], window_s) for t in times])
    return out


@dataclass
class FoldBench:
    """What a per-fold comparison needs: the corpus calls, the workflow's detectors, the generalization
    folds (amd_model.tools.folds) and their test calls prepared once (live VAD, shipped model)."""

    metas: list[dict]
    detectors: list[Any]
    folds: list[Any]
    ref: Any
    items: dict[str, Any]

    @classmethod
    def load(cls, corpus: Path, real_dir: Path, workflow: str,
             extra_keys: Callable[[list[Any]], set[str]] | None = None) -> FoldBench:
        from amd_model.runtime import AmdModel
        from amd_model.tools.evaluation import call_ms
        from amd_model.tools.folds import make_folds, prepare_items
        from amd_model.tools.train import load_meta
        from processors.amd_decision import load_presets

        metas = load_meta(corpus)
        detectors = load_presets()[workflow]
        real = sorted(q.name for q in real_dir.glob("*.wav"))
        folds = make_folds(metas, real, cv=5, max_test=400, groups=real_twins(real_dir, real))
        ref = AmdModel()
        keys = {k for f in folds for k in f.test} | (extra_keys(folds) if extra_keys else set())
        return cls(metas, detectors, folds, ref, prepare_items(corpus, metas, real_dir, keys, ref, call_ms(detectors)))

    def score(self, calls: Sequence[Any], probs: Sequence[np.ndarray], classes: Sequence[str],
              detectors: Sequence[Any]) -> tuple[dict, list]:
        """The production decision layer over these calls' probabilities: metrics and per-call results."""
        from amd_model.tools.evaluation import CallResult, metrics
        from amd_model.tools.folds import speech_anchors, verdicts

        res = [CallResult(it.call, v, v, *speech_anchors(it, self.ref.classes))
               for it, v in zip(calls, verdicts(calls, probs, classes, detectors), strict=True)]
        return metrics(res, "ours"), res

    def fold_row(self, fold: Any, calls: Sequence[Any], systems: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str],
                 Sequence[Any]]], pooled: dict[str, list], epochs: int | str | None) -> dict[str, Any]:
        """One fold's table row: each system (name, probabilities, classes, detectors) scored on its test
        calls; a real-greeting CV fold's results also go to `pooled` (see pooled_cv_row)."""
        row: dict[str, Any] = {"name": fold.name, "kind": fold.kind, "n": len(calls), "epochs": epochs}
        for name, probs, classes, dets in systems:
            row[name], res = self.score(calls, probs, classes, dets)
            if fold.kind == "real_cv":
                pooled.setdefault(name, []).extend(res)
        return row


def pooled_cv_row(pooled: dict[str, list]) -> dict[str, Any]:
    """The real-greeting CV folds' results pooled, one metrics entry per system."""
    from amd_model.tools.evaluation import metrics

    return {"name": "real greetings, 5-fold CV (pooled)", "kind": "real_cv_pooled",
            "n": len(next(iter(pooled.values())))} | {k: metrics(v, "ours") for k, v in pooled.items()}


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 10.0) -> Any:
    """Class-balanced L2 logistic regression on standardized inputs (scikit-learn; `l2` = 1 / C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, class_weight="balanced", max_iter=1000)).fit(X, y)


def predict(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict(X).astype(bool)


def logit(model: Any, x: np.ndarray) -> float:
    """The probe's log-odds of machine for one embedding."""
    return float(model.decision_function(x[None])[0])


def probe_folds(
    X: np.ndarray, metas: Sequence[dict], l2: float = 10.0, cv: int = 5,
    groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Leave-one-family-out and real-greeting CV accuracy of a linear probe (machine vs human);
    `groups`: real files that are one recording and share a CV fold (`folds.real_twins`)."""
    y = np.array([m["label"] == "machine" for m in metas])
    fam = np.array([family(m) for m in metas])
    sub = np.array([m.get("subtype", "") for m in metas])
    real = np.array([real_file(m) or "" for m in metas])
    out: dict[str, dict[str, float | int | None]] = {}

    def score(test: np.ndarray, pred: np.ndarray) -> dict[str, float | int | None]:
        yt, biz = y[test], sub[test] == "human_business"
        return {
            "n": int(test.sum()),
            "accuracy": float((pred == yt).mean()),
            "humans": float((~pred[~yt]).mean()) if (~yt).any() else None,
            "machines": float(pred[yt].mean()) if yt.any() else None,
            "business": float((~pred[biz]).mean()) if biz.any() else None,
        }

    for f in sorted(set(fam) - {"none"}):
        test = fam == f
        out[f"without {f}"] = score(test, predict(fit_logistic(X[~test], y[~test], l2), X[test]))
    files = sorted(set(real) - {""})
    if files:
        pred = np.zeros(len(y), dtype=bool)
        held = np.zeros(len(y), dtype=bool)
        present = [[f for f in g if f in files] for g in groups or []]  # the corpus may use only some files
        present = [g for g in present if g]
        covered = {f for g in present for f in g}
        for held_files in cv_held(files, cv, present + [[f] for f in files if f not in covered]):
            test = np.isin(real, sorted(held_files))
            pred[test] = predict(fit_logistic(X[~test], y[~test], l2), X[test])
            held |= test
        out[f"real greetings, {cv}-fold CV"] = score(held, pred[held])
    return out


VOICE = "voice_machine"  # the probe's column beside the net's classes in a fold's traces


def encoder_detector(threshold: float, min_talk_ms: int | None) -> Any:
    """A machine detector on the probe's column: it can fire once the embedding is taken."""
    from processors.amd_decision import DetectorConfig

    return DetectorConfig(name="voice_machine", label="machine", classes=[VOICE], threshold=threshold,
                          from_speech=True, min_talk_ms=min_talk_ms)


def with_fold_nets(
    corpus: Path, real_dir: Path, workflow: str, t: float, window_s: float, cache: Path | None,
    grid: Sequence[tuple[float, int | None]], l2: float = 10.0,
) -> dict[str, Any]:
    """Each generalization fold's net (amd_model.tools.folds, reused from CORPUS/folds/) through the
    production decision layer, alone and with one more detector on a probe trained on that fold's
    training calls and read `t` s after speech onset: does the encoder add what the net lacks?"""
    from tqdm import tqdm

    from amd_model.tools.folds import Budget, net_probs, train_fold
    from amd_model.tools.train import CLASSES

    bench = FoldBench.load(corpus, real_dir, workflow)
    hm = [i for i, m in enumerate(bench.metas) if m["label"] in ("human", "machine")]
    emb = dict(zip(hm, corpus_embeddings(corpus, bench.metas, hm, [t], window_s, cache)[f"encoder@{t:g}s"], strict=True))
    y = {i: bench.metas[i]["label"] == "machine" for i in hm}
    test_emb = onset_embeddings(bench.items, {k for f in bench.folds for k in f.test}, bench.ref.classes, [t], window_s)
    out: dict[str, Any] = {"t_s": t, "window_s": window_s, "workflow": workflow, "folds": []}
    pooled: dict[str, list] = {}
    for fold in tqdm(bench.folds, desc="folds", unit="fold"):
        net, info = train_fold(corpus, fold, Budget(minutes=4.0, max_epochs=15))
        tr = [i for i in fold.train_ids if i in emb]
        head = fit_logistic(np.stack([emb[i] for i in tr]), np.array([y[i] for i in tr]), l2)
        test = [bench.items[k] for k in fold.test]
        probs = net_probs(net, [it.feats.astype(np.float32) for it in test])
        ext = []
        for k, pr in zip(fold.test, probs, strict=True):
            onset, (e,) = test_emb[k]
            col = np.zeros((len(pr), 1), np.float32)
            if onset is not None:
                z = logit(head, e)
                col[int((onset / 1000 + t) * 10) :] = 1 / (1 + np.exp(-z))
            ext.append(np.c_[pr, col])
        runs = {"net": list(bench.detectors)} | {
            f"net+voice(p>={th:g}{'' if mt is None else f', talking {mt} ms'})": [*bench.detectors, encoder_detector(th, mt)]
            for th, mt in grid
        }
        systems = [(name, ext, [*CLASSES, VOICE], dets) for name, dets in runs.items()]
        out["folds"].append(bench.fold_row(fold, test, systems, pooled, info.get("epochs")))
    if pooled:
        out["folds"].append(pooled_cv_row(pooled))
    return out


def format_fold_nets(rep: dict[str, Any], what: str = "a voice_machine detector on the encoder probe read") -> str:
    lines = [f"fold nets (CORPUS/folds) + {what} {rep['t_s']:g} s after "
             f"onset ({rep['window_s']:g} s window), preset {rep['workflow']!r}",
             f"{'fold':36s} {'system':40s} {'acc':>7s} {'machine p50':>11s} {'human p50':>9s} {'business':>8s}"]
    for f in rep["folds"]:
        if f["kind"] == "real_cv":
            continue
        for name, m in f.items():
            if not isinstance(m, dict):
                continue
            lat = m["latency_ms"]
            mp = lat["machine_after_speech_onset"].get("p50")
            hp = lat["human_after_utterance_end"].get("p50")
            lines.append(f"{f['name'] + ' (' + str(f['n']) + ')':36s} {name:40s} {_pct(m['accuracy']):>7s} "
                         f"{'-' if mp is None else f'{mp:.0f} ms':>11s} {'-' if hp is None else f'{hp:.0f} ms':>9s} "
                         f"{_pct(m['business_pickups_human']['rate']):>8s}")
        if f.get("preset_picked_on_val"):
            lines.append(f"{'':36s} (re-picked on the fold's validation calls: {f['preset_picked_on_val']})")
    return "\n".join(lines)


def _pct(v: float | int | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def format_report(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [f"{'representation':16s} {'fold':28s} {'n':>5s} {'accuracy':>9s} {'humans':>8s} {'machines':>9s} {'business':>9s}"]
    for rep, folds in results.items():
        for name, r in folds.items():
            lines.append(f"{rep:16s} {name:28s} {r['n']:5d} {_pct(r['accuracy']):>9s} {_pct(r['humans']):>8s} "
                         f"{_pct(r['machines']):>9s} {_pct(r['business']):>9s}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("--times", type=float, nargs="+", default=[1.0, 2.0], help="seconds after speech onset")
    p.add_argument("--window-s", type=float, default=2.0, help="audio the encoder sees, ending at that time")
    p.add_argument("--l2", type=float, default=10.0)
    p.add_argument("--cache", type=Path, default=None, help="an .npz of embeddings to reuse or write")
    p.add_argument("--json", action="store_true")
    p.add_argument("--fold-nets", type=Path, default=None, metavar="REAL_DIR",
                   help="also run each fold's net (CORPUS/folds) through the decision layer, alone and with a "
                        "detector on the probe (REAL_DIR: the real greetings)")
    p.add_argument("--real-dir", type=Path, default=None,
                   help="the real greetings' folder: two files of one recording then share a CV fold")
    p.add_argument("--workflow", default="default")
    args = p.parse_args(argv)
    meta_path = args.corpus / "meta.jsonl"
    if not meta_path.is_file():
        print(f"{args.corpus}: not a corpus (no meta.jsonl); build one with `callgate corpus build`", file=sys.stderr)
        return 2
    if args.fold_nets:
        grid = [(0.5, None), (0.7, None), (0.9, None), (0.7, 1000), (0.9, 1000)]
        rep = with_fold_nets(args.corpus, args.fold_nets, args.workflow, max(args.times), args.window_s, args.cache, grid, args.l2)
        print(json.dumps(rep, indent=2, default=str) if args.json else format_fold_nets(rep))
        return 0
    all_metas = [json.loads(line) for line in meta_path.read_text().splitlines() if line.strip()]
    ids = [i for i, m in enumerate(all_metas) if m["label"] in ("human", "machine")]
    metas = [all_metas[i] for i in ids]
    feats = corpus_embeddings(args.corpus, all_metas, ids, args.times, args.window_s, args.cache)
    order = [f"{kind}@{t:g}s" for kind in ("encoder", "logmel") for t in sorted(args.times)]
    groups = None
    if args.real_dir:
        real = sorted(q.name for q in args.real_dir.glob("*.wav"))
        groups = real_twins(args.real_dir, real)
    results = {k: probe_folds(feats[k], metas, args.l2, groups=groups) for k in order}
    print(json.dumps(results, indent=2) if args.json else format_report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
