"""Which cues, at the moment the gate decides, tell a caller's word start from background speech?

    python -m turn_eval.gate_cues turn_eval/data/real/dev [--params JSON] [--fit]

Runs the gate (processors.gate.GateAnalyzer, the preset's parameters) after the production VAD on a
labelled set and records, for every window on which the gate had to decide whether to open (VAD
active, gate closed), the cues it could use: the 3-window peak relative to its open threshold, to the
caller's learned level and to the learned background level; the VAD segment's high-band tilt and
pitch relative to the caller's (processors.gate.window_tilt_db / window_pitch_hz, learned from the
windows the gate took for the caller); how long the segment has been rejected. Windows are labelled
caller (inside a caller's spoken segment) or background (inside a TV / second-speaker span clear of
the caller's turns). Prints each cue's AUC over the decision windows of the first 192 ms of each VAD
segment (where a start is decided) and, with --fit, a logistic combination fitted on the first half
of the calls and scored on the second (the weights a `cue_*` preset would use).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from processors.gate import WIN, WIN_MS, GateAnalyzer, GateParams
from turn_eval.features import auc
from turn_eval.runner import CallInputs, _speech_analyzer

CUES = ("peak_minus_need", "peak_minus_caller", "peak_minus_bg", "tilt_rel", "pitch_dist_st", "since_onset_ms")


class _Recorder(GateAnalyzer):
    """The gate, noting its cues at each closed-gate decision."""

    def __init__(self, params: GateParams) -> None:
        super().__init__(params)
        self.want_cues = True
        self.rows: list[dict[str, float]] = []

    def _decide(self, t0: float, level: float, peak: float, tilt: float) -> list:
        if not self.caller_open:
            need = self.open_threshold_db(t0)
            cues = self.cue_values(t0)
            self.rows.append({
                "t0": t0,
                "peak_minus_need": peak - need,
                "peak_minus_caller": peak - (self._baseline if self._baseline is not None else self.p.fallback_dbfs),
                "peak_minus_bg": peak - self._bg_level if self._bg_level is not None else np.nan,
                "tilt_rel": cues["tilt_rel"],
                "pitch_dist_st": cues["pitch_dist_st"],
                "since_onset_ms": t0 - self._vad_onset,
                "learned": float(self._baseline is not None),
            })
        return super()._decide(t0, level, peak, tilt)


def _label(t_mid: float, labels: dict[str, Any]) -> int:
    """+1 caller speech, -1 background speech clear of the caller, 0 neither."""
    for turn in labels["turns"]:
        for s in turn["segments"]:
            if s["start_ms"] - 64 <= t_mid < s["end_ms"]:
                return 1
        if turn["start_ms"] - 500 <= t_mid < turn["end_ms"] + 500:
            return 0
    for b in labels.get("background", []):
        if b["kind"] in ("tv", "second_speaker") and b["start_ms"] <= t_mid < b["end_ms"]:
            return -1
    return 0


def record(calls: list[CallInputs], gp: GateParams, vad_params: dict[str, float]) -> list[dict[str, float]]:
    out = []
    for ci, call in enumerate(calls):
        vad = _speech_analyzer(call.conf, vad_params)
        gate = _Recorder(gp)
        n = len(call.pcm) // WIN
        for i in range(n):
            win = call.pcm[i * WIN : (i + 1) * WIN]
            gate.process_window(win)
            for e in vad.process(win):
                if e.kind == "start":
                    gate.vad_start(e.t_ms)
                else:
                    gate.vad_end(e.t_ms)
        for r in gate.rows:
            r["y"] = _label(r["t0"] + WIN_MS / 2, call.labels)
            r["call"] = ci
            if r["y"] != 0:
                out.append(r)
    return out


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Class-balanced L2 logistic regression (scikit-learn; `l2` per mean sample): weights, then the bias,
    in the cues' own units so they read as dB of level."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0 / (l2 * len(y)), class_weight="balanced", max_iter=1000).fit(X, y)
    return np.r_[clf.coef_[0], clf.intercept_]


def main() -> None:
    from loguru import logger

    from processors.endpointer import load_listen_preset
    from turn_eval.evaluate import load_set

    logger.remove()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--params", default=None, help="JSON gate parameters over the preset's")
    p.add_argument("--fit", action="store_true")
    p.add_argument("--first-ms", type=float, default=192.0, help="decision windows this close to the VAD onset")
    args = p.parse_args()
    preset = load_listen_preset("agent")
    gp = preset.gate
    if args.params:
        gp = GateParams.from_dict({**gp.to_dict(), **json.loads(args.params)})
    calls = load_set(args.folder)
    rows = [r for r in record(calls, gp, preset.vad) if r["since_onset_ms"] <= args.first_ms]
    y = np.array([r["y"] == 1 for r in rows], dtype=float)
    print(f"{args.folder}: {len(calls)} calls; decision windows: caller {int(y.sum())}, background {int(len(y) - y.sum())}")
    for c in CUES:
        v = np.array([r[c] for r in rows])
        ok = ~np.isnan(v)
        a = auc(v[ok & (y == 1)], v[ok & (y == 0)])
        print(f"  {c:18s} AUC {a:.3f}  (defined on {ok.mean():.0%} of windows)")
    if args.fit:
        names = ["peak_minus_need", "tilt_rel", "pitch_dist_st"]
        X = np.array([[0.0 if np.isnan(r[c]) else r[c] for c in names] for r in rows])
        call = np.array([r["call"] for r in rows])
        tr, te = call < len(calls) // 2, call >= len(calls) // 2
        for subset in (names[:1], names[:2], [names[0], names[2]], names):
            idx = [names.index(c) for c in subset]
            w = fit_logistic(X[tr][:, idx], y[tr])
            s = np.c_[X[te][:, idx], np.ones(te.sum())] @ w
            a = auc(s[y[te] == 1], s[y[te] == 0])
            dbw = {c: round(float(w[k] / w[0]), 3) for k, c in enumerate(subset)}
            print(f"  logistic {'+'.join(subset):45s} held-out AUC {a:.3f}  weights in dB of level {dbw}  "
                  f"bias {w[-1] / w[0]:.2f} dB")


if __name__ == "__main__":
    main()
