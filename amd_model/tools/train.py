"""Train the streaming AMD network on a corpus, export it to ONNX, and measure it (needs the `train` extra).

Why per-step targets: the model must become confident only as evidence accrues, so every 100 ms step
is labelled with the call's class once evidence has started (speech, greeting, SIT tone) and with
"none" before it (and for calls that never give evidence: silence, ringback, hold music, busy).
Cross-entropy then teaches the posterior given the audio so far: "Hello?" + 300 ms of silence is
human, speech still running after ~1 s is probably a machine, and so on.

`callgate train --corpus DIR` trains, exports
amd_model/amd.onnx + amd.json, checks onnxruntime == torch, and prints held-out metrics.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from amd_model import features

CLASSES = ("none", "human", "machine", "ivr", "carrier_intercept")
VERDICT_CLASSES = ("human", "machine", "ivr", "carrier_intercept")
HERE = Path(__file__).resolve().parents[1]  # amd_model/: where the shipped model lives
STEP_MS = 100
EARLY_STEPS = 15  # the first 1.5 s after evidence onset decide the verdict: weight them up
EARLY_W = 1.6
BIZ_W = 1.8  # business pickups are the human calls most often mistaken for machines
MODEL_VERSION = "1.3.0"


def load_meta(corpus: Path) -> list[dict]:
    """meta.jsonl rows (one per call) of a corpus built by amd_model.tools.corpus."""
    with open(corpus / "meta.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def step_targets(meta: dict, n_steps: int) -> np.ndarray:
    """Per-step class index: "none" until evidence onset, then the call class."""
    y = np.zeros(n_steps, dtype=np.int64)
    label = meta["label"]
    onset = meta.get("evidence_onset_ms", meta.get("speech_onset_ms"))
    if label not in CLASSES or onset is None:
        return y
    first = int(onset // STEP_MS) + 1  # first step whose end is past the onset (it contains >= some evidence)
    y[first:] = CLASSES.index(label)
    return y


def step_weights(meta: dict, targets: np.ndarray) -> np.ndarray:
    """Per-step loss weights: business pickups upweighted (balance within human), and the first
    EARLY_STEPS steps after evidence onset upweighted so the early posterior gets more capacity."""
    wv = np.ones(targets.shape[0], dtype=np.float32)
    nz = np.flatnonzero(targets)
    if nz.size:
        wv[nz[0] : nz[0] + EARLY_STEPS] *= EARLY_W
    if meta.get("subtype") == "human_business":
        wv *= BIZ_W
    return wv


def call_features(pcm: np.ndarray) -> np.ndarray:
    """A whole call's log-mels as the net's steps: (n_steps, FRAMES_PER_STEP, N_MELS) float32."""
    n = pcm.size // features.STEP_SAMPLES
    f = features.logmel(pcm[: n * features.STEP_SAMPLES])
    return f.reshape(n, features.FRAMES_PER_STEP, features.N_MELS)


def load_features(corpus: Path, metas: list[dict], cache: Path | None = None) -> list[np.ndarray]:
    """Log-mel (n_steps, 10, 40) float16 per call; cached next to the corpus because it is reused often."""
    from callgate.audio import load_audio

    cache = cache or corpus / "features_v1.npz"
    if cache.exists():
        z = np.load(cache)
        if int(z["n"]) == len(metas):
            return [z[f"f{i}"] for i in range(len(metas))]
    out = []
    for m in metas:
        out.append(call_features(load_audio(corpus / m["file"])).astype(np.float16))
    np.savez(cache, n=len(metas), **{f"f{i}": f for i, f in enumerate(out)})
    return out


# ------------------------------------------------------------------ decisions (for metrics only)


def simple_verdict(
    probs: np.ndarray, classes: tuple[str, ...], thresholds: dict[str, float]
) -> tuple[str, int | None]:
    """First step where a verdict class passes its threshold -> (label, decision time ms at step end).

    This is a stand-in for the decision layer (processors/amd*), used only to report model quality.
    """
    for k in range(probs.shape[0]):
        for c, th in thresholds.items():
            if probs[k, classes.index(c)] >= th:
                return c, (k + 1) * STEP_MS
    return "unknown", None


def call_metrics(rows: list[dict], thresholds: dict[str, float]) -> dict:
    """Accuracy, per-class P/R and latencies from per-call probability traces."""
    preds = []
    lat_h, lat_m = [], []
    for r in rows:
        pred, t = simple_verdict(r["probs"], r["classes"], thresholds)
        preds.append(pred)
        if pred == r["label"] == "human" and t is not None and r.get("first_utterance_end_ms") is not None:
            lat_h.append(t - r["first_utterance_end_ms"])
        if pred == r["label"] == "machine" and t is not None and r.get("speech_onset_ms") is not None:
            lat_m.append(t - r["speech_onset_ms"])
    labels = [r["label"] for r in rows]
    acc = float(np.mean([p == t for p, t in zip(preds, labels, strict=True)])) if rows else 0.0
    per = {}
    for c in ("human", "machine", "ivr", "carrier_intercept", "unknown"):
        tp = sum(p == t == c for p, t in zip(preds, labels, strict=True))
        npred = sum(p == c for p in preds)
        ntrue = sum(t == c for t in labels)
        per[c] = {
            "precision": round(tp / npred, 4) if npred else None,
            "recall": round(tp / ntrue, 4) if ntrue else None,
            "n": ntrue,
        }
    biz = [p for p, r in zip(preds, rows, strict=True) if r.get("subtype") == "human_business"]
    dev = [p for p, r in zip(preds, rows, strict=True) if r.get("subtype") == "dev_greeting"]
    return {
        "n": len(rows),
        "accuracy": round(acc, 4),
        "per_class": per,
        "business_pickup_human_rate": round(float(np.mean([p == "human" for p in biz])), 4) if biz else None,
        "dev_greeting_machine_rate": round(float(np.mean([p == "machine" for p in dev])), 4) if dev else None,
        "median_human_ms_after_utterance_end": float(np.median(lat_h)) if lat_h else None,
        "median_machine_ms_after_speech_onset": float(np.median(lat_m)) if lat_m else None,
        "confusion": dict(Counter(f"{t}->{p}" for p, t in zip(preds, labels, strict=True) if p != t)),
        "by_subtype": {
            st: round(
                float(
                    np.mean(
                        [p == r["label"] for p, r in zip(preds, rows, strict=True) if r.get("subtype") == st]
                    )
                ),
                4,
            )
            for st in sorted({str(r.get("subtype")) for r in rows})
        },
    }


# ------------------------------------------------------------------ training


def train(
    corpus: Path,
    out_dir: Path = HERE,
    epochs: int = 40,
    hidden: int = 160,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 2,
    max_minutes: float = 23.0,
    members: int = 1,
    jobs: int = 1,
) -> dict:
    """Train `members` nets (seeds seed, seed+1, ...; `jobs` at a time), export their average as one
    ONNX step graph + amd.json, and evaluate it on eval/.

    Member checkpoints go to CORPUS/members/ (outside the repo), so an interrupted run can be combined
    by hand and a finished one re-exported without retraining.
    """
    import torch

    from amd_model.tools.net import AmdEnsemble, AmdNet

    if members < 1 or jobs < 1:
        raise ValueError("members and jobs must be >= 1")
    t0 = time.time()
    metas = load_meta(corpus)
    load_features(corpus, metas)  # build the feature cache once, before any worker reads it
    ck = corpus / "members"
    ck.mkdir(exist_ok=True)
    args = [
        dict(corpus=corpus, ckpt=ck / f"member_s{seed + k}_h{hidden}.pt", epochs=epochs, hidden=hidden,
             batch=batch, lr=lr, seed=seed + k, threads=max(1, threads // min(jobs, members)),
             max_minutes=max_minutes)
        for k in range(members)
    ]  # fmt: skip
    if jobs > 1 and members > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, members), mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_train_member_kw, args))
    else:
        results = [train_member(**a) for a in args]
    nets = []
    for a in args:
        net = AmdNet(len(CLASSES), hidden=hidden)
        net.load_state_dict(torch.load(a["ckpt"], weights_only=True))
        nets.append(net.eval())
    model = AmdEnsemble(nets)
    info = export(model, out_dir / "amd.onnx", model.hidden)
    info.update(
        {
            "train_minutes": round((time.time() - t0) / 60, 1),
            "members": [{"seed": a["seed"], "hidden": hidden, **r} for a, r in zip(args, results, strict=True)],
        }
    )
    info["corpus"] = {"path": str(corpus), **json.loads((corpus / "corpus.json").read_text())}
    write_meta(out_dir, info)
    report = evaluate(out_dir / "amd.onnx", corpus / "eval")
    info["heldout"] = report
    write_meta(out_dir, info)
    return info


def vtlp_source_bands(alpha: float) -> np.ndarray:
    """For each mel band, the (fractional) band it takes its energy from when the spectrum is warped by
    `alpha` (vocal tract length perturbation, Jaitly & Hinton 2013: f -> alpha * f up to a knee at 80 % of
    the top band, then linear so that the top stays the top)."""
    centers, top = _MEL_CENTERS_HZ, _MEL_CENTERS_HZ[-1]
    knee = 0.8 * top * min(alpha, 1.0)  # in warped (target) frequency
    src = np.where(centers <= knee, centers / alpha, top - (top - knee / alpha) * (top - centers) / (top - knee))
    return np.interp(src, centers, np.arange(features.N_MELS, dtype=np.float64))


_MEL_CENTERS_HZ = features._mel_to_hz(  # the centre of each band of features.mel_filterbank
    np.linspace(features._hz_to_mel(features.FMIN), features._hz_to_mel(features.FMAX), features.N_MELS + 2)
)[1:-1]


def warp_bands(f: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Log-mel frames (..., N_MELS) re-read at fractional bands `src` (linear interpolation)."""
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, features.N_MELS - 1)
    frac = (src - i0).astype(np.float32)
    return f[..., i0] * (1 - frac) + f[..., i1] * frac


def _train_member_kw(kw: dict) -> dict:
    return train_member(**kw)


def train_member(
    corpus: Path,
    ckpt: Path,
    *,
    epochs: int,
    hidden: int,
    batch: int,
    lr: float,
    seed: int,
    threads: int,
    max_minutes: float,
    train_ids: list[int] | None = None,
    val_ids: list[int] | None = None,
    tag: str | None = None,
    extra: dict[int, np.ndarray] | None = None,
    warp: float = 0.0,
) -> dict:
    """Train one net on the train split, keep the epoch that scores best on val, save it to `ckpt`.

    No defaults here: `train()` owns the hyper-parameters and passes every one. `train_ids` /
    `val_ids` (indices into meta.jsonl) replace the corpus splits: the cross-validation folds of
    `amd_model.tools.folds` train on everything but the held-out family or files. `extra` (call index ->
    (n_steps, k) array) feeds k more per-step inputs into the GRU (a measurement of
    `amd_model.tools.encoder_fusion --scratch`; the shipped model has none)."""
    import torch

    from amd_model.tools.net import AmdNet

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    metas = load_meta(corpus)
    feats = load_features(corpus, metas)
    tag = f"[{tag or f'member seed {seed}'}] "
    print(f"{tag}features: {len(feats)} calls in {time.time() - t0:.0f}s", flush=True)
    targets = [step_targets(m, f.shape[0]) for m, f in zip(metas, feats, strict=True)]
    tr = train_ids if train_ids is not None else [i for i, m in enumerate(metas) if m["split"] == "train"]
    stepw = [step_weights(m, t) for m, t in zip(metas, targets, strict=True)]
    va = val_ids if val_ids is not None else [i for i, m in enumerate(metas) if m["split"] == "val"]

    allf = np.concatenate([feats[i].reshape(-1, features.N_MELS).astype(np.float32) for i in tr[:800]])
    n_extra = next(iter(extra.values())).shape[1] if extra else 0
    net = AmdNet(len(CLASSES), hidden=hidden, n_extra=n_extra)
    net.feat_mean.copy_(torch.from_numpy(allf.mean(0)))
    net.feat_std.copy_(torch.from_numpy(allf.std(0) + 1e-3))
    counts = np.bincount(np.concatenate([targets[i] for i in tr]), minlength=len(CLASSES)).astype(np.float64)
    cw = torch.tensor((counts.sum() / (len(CLASSES) * np.maximum(counts, 1))) ** 0.5, dtype=torch.float32)
    print(f"{tag}step class counts {dict(zip(CLASSES, counts.astype(int).tolist(), strict=True))}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-3)
    total_steps = epochs * math.ceil(len(tr) / batch)
    budget_s = max_minutes * 60.0

    def set_lr(step: int) -> float:
        """Warm-up then cosine decay over progress = max(steps, wall time): a shared CPU still anneals."""
        prog = min(1.0, max(step / total_steps, (time.time() - t_train) / budget_s))
        f = prog / 0.05 if prog < 0.05 else 0.5 * (1 + math.cos(math.pi * (prog - 0.05) / 0.95))
        for g in opt.param_groups:
            g["lr"] = lr * max(f, 0.02)
        return prog

    lossf = torch.nn.CrossEntropyLoss(weight=cw, reduction="none")
    log_floor = math.log(features.LOG_FLOOR)

    def batchify(idx: list[int], augment: bool) -> tuple:
        tmax = max(feats[i].shape[0] for i in idx)
        x = np.zeros((len(idx), tmax, features.FRAMES_PER_STEP, features.N_MELS), dtype=np.float32)
        y = np.zeros((len(idx), tmax), dtype=np.int64)
        w = np.zeros((len(idx), tmax), dtype=np.float32)
        ex = np.zeros((len(idx), tmax, n_extra), dtype=np.float32)
        for j, i in enumerate(idx):
            if n_extra:
                ex[j, : feats[i].shape[0]] = extra[i]  # type: ignore[index]
            f = feats[i].astype(np.float32)
            if augment:
                # level jitter (+-8 dB) and spectral tilt: phones differ in gain and frequency response
                f = (
                    f
                    + rng.uniform(-8, 8) * math.log(10) / 10
                    + np.linspace(-1, 1, features.N_MELS) * rng.uniform(-0.3, 0.3)
                )
                if rng.random() < 0.5:  # extra stationary noise floor at a random level (power domain)
                    floor = float(np.quantile(f, 0.9)) - rng.uniform(2.5, 7.0)
                    shape = np.linspace(0, -1, features.N_MELS) * rng.uniform(0, 2)
                    f = np.logaddexp(f, floor + shape + rng.standard_normal(f.shape) * 0.5)
                if warp:  # vocal tract length perturbation: the same words from another speaker's formants
                    f = warp_bands(f, vtlp_source_bands(rng.uniform(1 - warp, 1 + warp)))
                if rng.random() < 0.5:  # SpecAugment-style band mask
                    b0 = int(rng.integers(0, features.N_MELS - 6))
                    f[:, :, b0 : b0 + int(rng.integers(1, 6))] = float(np.median(f))
                f = np.maximum(f, log_floor)
            n = f.shape[0]
            x[j, :n] = f
            y[j, :n] = targets[i]
            w[j, :n] = stepw[i] if augment else 1.0
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), torch.from_numpy(ex)

    def predict(idx: list[int]) -> list[np.ndarray]:
        net.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, len(idx), 64):
                part = idx[s : s + 64]
                x, _, _, ex = batchify(part, False)
                p = torch.softmax(net(x, extra=ex)[0], -1).numpy()
                outs += [p[j, : feats[i].shape[0]] for j, i in enumerate(part)]
        return outs

    best = (-1e9, None)
    history = []
    t_train = time.time()
    gstep = 0
    prog = 0.0
    for ep in range(epochs):
        net.train()
        order = rng.permutation(tr)
        tot, nb = 0.0, 0
        te = time.time()
        for s in range(0, len(order), batch):
            x, y, w, ex = batchify(list(order[s : s + batch]), True)
            logits, _ = net(x, extra=ex)
            loss = (lossf(logits.reshape(-1, len(CLASSES)), y.reshape(-1)) * w.reshape(-1)).sum() / (w > 0).sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            prog = set_lr(gstep)
            gstep += 1
            opt.step()
            tot += float(loss.detach())
            nb += 1
        probs = predict(va)
        rows = [{**metas[i], "probs": p, "classes": CLASSES} for i, p in zip(va, probs, strict=True)]
        vm = call_metrics(rows, default_thresholds())
        nll = float(
            np.mean(
                np.concatenate(
                    [-np.log(p[np.arange(len(p)), targets[i]] + 1e-7) for i, p in zip(va, probs, strict=True)]
                )
            )
        )
        step_acc = float(
            np.mean(np.concatenate([p.argmax(1) == targets[i] for i, p in zip(va, probs, strict=True)]))
        )
        history.append(
            {
                "epoch": ep + 1,
                "loss": tot / nb,
                "val_nll": nll,
                "val_step_acc": step_acc,
                "val_call_acc": vm["accuracy"],
            }
        )
        print(
            f"{tag}epoch {ep + 1}/{epochs} loss {tot / nb:.4f} val nll {nll:.4f} step-acc {step_acc:.4f} "
            f"call-acc {vm['accuracy']:.4f} "
            f"human-lat {vm['median_human_ms_after_utterance_end']} machine-lat {vm['median_machine_ms_after_speech_onset']} "
            f"biz {vm['business_pickup_human_rate']} ({time.time() - te:.0f}s)",
            flush=True,
        )
        # Calibrated probabilities matter to the decision layer; business pickups and fast machine
        # verdicts are product targets.
        biz = vm["business_pickup_human_rate"] or 0
        machine_s = (vm["median_machine_ms_after_speech_onset"] or 3000) / 1000
        score = vm["accuracy"] - 0.2 * nll + 0.05 * biz - 0.02 * machine_s
        if score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in net.state_dict().items()})
        if prog >= 1.0:
            print(f"{tag}stopping: {max_minutes} min training budget reached", flush=True)
            break
    assert best[1] is not None
    torch.save(best[1], ckpt)
    return {
        "train_minutes": round((time.time() - t0) / 60, 1),
        "epochs": len(history),
        "history": history,
        "n_train": len(tr),
        "n_val": len(va),
    }


def default_thresholds() -> dict[str, float]:
    """Single-threshold stand-in detectors used for the reported metrics."""
    return {"human": 0.85, "machine": 0.85, "ivr": 0.9, "carrier_intercept": 0.9}


def export(model: object, path: Path, hidden: int) -> dict:
    """Export the step graph of an AmdEnsemble (opset 17, state in/out), then check onnxruntime == torch."""
    import onnxruntime as ort
    import torch

    from amd_model.tools.net import AmdStep

    model.eval()  # type: ignore[attr-defined]
    step = AmdStep(model).eval()  # type: ignore[arg-type]
    feats = torch.randn(1, features.FRAMES_PER_STEP, features.N_MELS) - 5
    state = torch.zeros(1, 1, hidden)
    torch.onnx.export(
        step,
        (feats, state),
        str(path),
        input_names=["feats", "state"],
        output_names=["probs", "state_out"],
        dynamic_axes={
            "feats": {0: "batch"},
            "state": {1: "batch"},
            "probs": {0: "batch"},
            "state_out": {1: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 30, features.FRAMES_PER_STEP, features.N_MELS, generator=g) * 2 - 6
    with torch.no_grad():
        ref = model(x).numpy()  # type: ignore[operator]
    h = np.zeros((1, 3, hidden), dtype=np.float32)
    got = []
    for t in range(x.shape[1]):
        p, h = sess.run(None, {"feats": x[:, t].numpy(), "state": h})
        got.append(p)
    diff = float(np.abs(np.stack(got, 1) - ref).max())
    if diff > 1e-4:
        raise RuntimeError(f"ONNX export mismatch: max |onnx - torch| = {diff}")
    print(
        f"exported {path} ({path.stat().st_size / 1e6:.2f} MB), max |onnx - torch| = {diff:.2e}", flush=True
    )
    return {"onnx_torch_max_abs_diff": diff, "size_bytes": path.stat().st_size, "hidden": hidden}


def write_meta(out_dir: Path, info: dict) -> None:
    """amd.json: what the runtime needs (classes, state shape, feature config) + provenance and metrics."""
    meta = {
        "version": MODEL_VERSION,
        "classes": list(CLASSES),
        "verdict_classes": list(VERDICT_CLASSES),
        "no_evidence_class": "none",
        "step_ms": STEP_MS,
        "step_samples": features.STEP_SAMPLES,
        "inputs": {
            "feats": ["batch", features.FRAMES_PER_STEP, features.N_MELS],
            "state": [1, "batch", info["hidden"]],
        },
        "outputs": {"probs": ["batch", len(CLASSES)], "state_out": [1, "batch", info["hidden"]]},
        "state_shape": [1, 1, info["hidden"]],
        "features": features.config(),
        "opset": 17,
        **{k: v for k, v in info.items() if k != "hidden"},
    }
    (out_dir / "amd.json").write_text(json.dumps(meta, indent=1) + "\n")


def evaluate(model_path: Path, eval_dir: Path, thresholds: dict[str, float] | None = None) -> dict:
    """Run the exported model (onnxruntime, the serving path) over eval/ and compute call metrics."""
    from amd_model.runtime import AmdModel
    from callgate.audio import load_audio

    model = AmdModel(model_path)
    metas = [json.loads(line) for line in open(eval_dir / "meta.jsonl")]
    rows = []
    for m in metas:
        probs = model.run(load_audio(eval_dir / m["file"]))
        rows.append({**m, "probs": probs, "classes": model.classes})
    np.savez_compressed(
        eval_dir / "traces_amd_v1.npz", **{m["file"]: r["probs"] for m, r in zip(metas, rows, strict=True)}
    )
    report = {"thresholds": thresholds or default_thresholds()}
    report.update(call_metrics(rows, thresholds or default_thresholds()))
    synth = [r for r in rows if r.get("subtype") != "dev_greeting"]
    report["synthetic_only"] = call_metrics(synth, thresholds or default_thresholds())
    sweep = []
    for th in (0.6, 0.7, 0.8, 0.9, 0.95):
        m = call_metrics(
            rows, {"human": th, "machine": th, "ivr": max(th, 0.8), "carrier_intercept": max(th, 0.8)}
        )
        sweep.append(
            {
                "threshold": th,
                "accuracy": m["accuracy"],
                "business_pickup_human_rate": m["business_pickup_human_rate"],
                "median_human_ms_after_utterance_end": m["median_human_ms_after_utterance_end"],
                "median_machine_ms_after_speech_onset": m["median_machine_ms_after_speech_onset"],
            }
        )
    report["threshold_sweep"] = sweep
    return report

