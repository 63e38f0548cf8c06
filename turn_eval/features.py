"""Which per-window cues tell the caller from background speech? (the measurement behind processors/gate.py)

    python -m turn_eval.features turn_eval/data/dev

For every 32 ms window that Silero calls speech (confidence >= 0.5) and that lies inside a caller
segment (caller) or inside a background-speech span away from any caller turn (background), it
computes candidate cues and prints each one's ROC AUC and the caller-window recall at which 90 % of
background windows are rejected. The caller's level is learned causally, as the gate does (85th
percentile of the caller windows of the last 30 s); `oracle` rows use the labels to pick those
windows, so they bound what any level learner could do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from callgate.audio import load_audio
from turn_eval.dataset import load_labels

WIN = 256


def silero_confidences(pcm: np.ndarray) -> np.ndarray:
    """Silero VAD confidence per 32 ms window (Pipecat's bundled model, 8 kHz, fresh state)."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    vad = SileroVADAnalyzer(sample_rate=8000)
    vad.set_sample_rate(8000)
    n = len(pcm) // WIN
    return np.array([np.ravel(vad.voice_confidence(pcm[i * WIN : (i + 1) * WIN].tobytes()))[0] for i in range(n)])


def window_features(pcm: np.ndarray) -> dict[str, np.ndarray]:
    """Level and spectral cues per window."""
    n = len(pcm) // WIN
    x = pcm[: n * WIN].reshape(n, WIN).astype(np.float64) / 32768.0
    level = 10 * np.log10(np.mean(x**2, axis=1) + 1e-10)
    spec = np.abs(np.fft.rfft(x * np.hanning(WIN), axis=1)) ** 2 + 1e-12
    f = np.fft.rfftfreq(WIN, 1 / 8000)
    total = spec[:, (f >= 300) & (f <= 3400)].sum(axis=1)
    hf = 10 * np.log10(spec[:, (f >= 2000) & (f <= 3400)].sum(axis=1) / total)
    band = spec[:, (f >= 300) & (f <= 3400)]
    flat = np.mean(np.log(band), axis=1) - np.log(np.mean(band, axis=1))
    centroid = (band * f[(f >= 300) & (f <= 3400)]).sum(axis=1) / band.sum(axis=1)
    run_max = np.maximum.reduce([level, np.r_[level[:1], level[:-1]], np.r_[level[:2], level[:-2]]])
    # Onset sharpness: rise over the previous 96 ms (a close talker's syllables rise fast, reverb smears).
    rise = level - np.minimum.reduce([np.r_[level[:k], level[:-k]] for k in (1, 2, 3)])
    return {"level": level, "run_max3": run_max, "hf_db": hf, "flatness": flat, "centroid": centroid, "rise": rise}


def _labels_per_window(n: int, f: dict) -> np.ndarray:
    """+1 caller, -1 background, 0 neither/ambiguous."""
    lab = np.zeros(n, dtype=np.int8)
    t = (np.arange(n) + 0.5) * WIN / 8.0
    for b in f["background"]:
        if b["kind"] in ("tv", "second_speaker"):
            lab[(t >= b["start_ms"]) & (t < b["end_ms"])] = -1
    for turn in f["turns"]:
        lab[(t >= turn["start_ms"] - 300) & (t < turn["end_ms"] + 300)] = 0
        for s in turn["segments"]:
            lab[(t >= s["start_ms"]) & (t < s["end_ms"])] = 1
    return lab


def _causal_baseline(level: np.ndarray, mask: np.ndarray, fallback: float = -29.0) -> np.ndarray:
    """85th percentile of level over the mask windows of the last 30 s (fallback until 20 are seen)."""
    out = np.full(len(level), fallback)
    hist: list[tuple[int, float]] = []
    span = int(30000 / 32)
    for i in range(len(level)):
        hist = [(j, v) for j, v in hist if j > i - span] if i % 50 == 0 else hist
        if len(hist) >= 20:
            out[i] = np.percentile([v for _, v in hist], 85)
        if mask[i]:
            hist.append((i, level[i]))
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > a random negative)."""
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv)) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def recall_at_reject(pos: np.ndarray, neg: np.ndarray, reject: float = 0.9) -> float:
    thr = np.quantile(neg, reject)
    return float(np.mean(pos > thr))


def study(folder: Path, limit: int | None = None) -> dict[str, tuple[float, float]]:
    data = load_labels(folder)
    rows: dict[str, list[np.ndarray]] = {}
    labs = []
    for k, (name, f) in enumerate(sorted(data["files"].items())):
        if limit and k >= limit:
            break
        pcm = load_audio(folder / name)
        conf = silero_confidences(pcm)
        feats = window_features(pcm)
        n = len(conf)
        lab = _labels_per_window(n, f)
        speech = conf >= 0.5
        feats = {k2: v[:n] for k2, v in feats.items()}
        base_oracle = _causal_baseline(feats["level"], (lab == 1) & speech)
        # Causal learner without labels: windows louder than the fallback/learned threshold count as caller.
        base_learn = np.full(n, -29.0)
        hist: list[float] = []
        for i in range(n):
            if len(hist) >= 20:
                base_learn[i] = np.percentile(hist[-900:], 85)
            if speech[i] and feats["run_max3"][i] >= base_learn[i] - 4:
                hist.append(feats["level"][i])
        feats["rel_level_oracle"] = feats["level"] - base_oracle
        feats["rel_runmax_oracle"] = feats["run_max3"] - base_oracle
        feats["rel_runmax_learned"] = feats["run_max3"] - base_learn
        keep = speech & (lab != 0)
        for k2, v in feats.items():
            rows.setdefault(k2, []).append(v[keep])
        labs.append(lab[keep])
    y = np.concatenate(labs)
    out = {}
    for k2, parts in rows.items():
        v = np.concatenate(parts)
        a = auc(v[y == 1], v[y == -1])
        sign = 1 if a >= 0.5 else -1
        out[k2] = (max(a, 1 - a), recall_at_reject(sign * v[y == 1], sign * v[y == -1]))
    # All cues together: logistic regression fitted on the first half of the windows, scored on the second.
    names = ["rel_runmax_learned", "hf_db", "flatness", "centroid", "rise"]
    X = np.stack([np.concatenate(rows[k2]) for k2 in names], axis=1)
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    yy = (y == 1).astype(np.float64)
    half = len(yy) // 2
    w = np.zeros(X.shape[1] + 1)
    Xb = np.c_[X, np.ones(len(X))]
    for _ in range(500):
        p_ = 1 / (1 + np.exp(-Xb[:half] @ w))
        w -= 0.5 * Xb[:half].T @ (p_ - yy[:half]) / half
    s_ = Xb[half:] @ w
    out["combined_logistic"] = (auc(s_[yy[half:] == 1], s_[yy[half:] == 0]),
                                recall_at_reject(s_[yy[half:] == 1], s_[yy[half:] == 0]))
    s_lvl = X[half:, 0]
    out["rel_runmax_learned_same_half"] = (auc(s_lvl[yy[half:] == 1], s_lvl[yy[half:] == 0]),
                                           recall_at_reject(s_lvl[yy[half:] == 1], s_lvl[yy[half:] == 0]))
    print(f"windows: caller {int((y == 1).sum())}, background {int((y == -1).sum())}")
    for k2, (a, r) in sorted(out.items(), key=lambda kv: -kv[1][0]):
        print(f"  {k2:22s} AUC {a:.3f}   caller recall at 90 % background rejected {r:.3f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    study(args.folder, args.limit)


if __name__ == "__main__":
    main()
