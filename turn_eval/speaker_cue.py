"""Would a speaker cue stop the background openings the two-stage gate confirms? Measured, not shipped.

    python -m turn_eval.speaker_cue turn_eval/data/real_big/dev

Runs the gate (the `agent` preset) after the production VAD and, at each of its tentative openings,
scores the audio from the claimed start up to the decision (200 / 400 / 870 ms, or the confirmation)
with a caller-vs-world likelihood ratio on 12 MFCCs (c1-c12 of 24 log-mel bands, 32 ms windows, no
level term): the caller's model is a diagonal Gaussian of the windows the gate took for the caller
before that opening (>= 30 of them; variance shrunk halfway to the world's), the world model one
diagonal Gaussian of the loud windows of the first half of the calls; openings are scored on the
second half. Prints the AUC over confirmed openings (caller vs background) and, for the background
openings the gate let through in scored segments (the `gate_eval` hits), the share of caller openings
that score lower: a veto that would stop a hit costs at least that share of the caller's turns.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from processors.gate import WIN, WIN_MS, GateAnalyzer, GateEvent, GateParams
from processors.interruption import mel_bank
from turn_eval.features import auc
from turn_eval.gate_cues import _label
from turn_eval.runner import _speech_analyzer

N_MFCC = 12
MIN_ENROL = 30
HORIZONS_MS = (200, 400, 870, None)  # None: up to the gate's own decision


_FB = mel_bank(WIN, bands=24)
_HANN = np.hanning(WIN).astype(np.float32)
_K = np.arange(_FB.shape[0])
_DCT = np.cos(np.pi / _FB.shape[0] * (_K[None, :] + 0.5) * np.arange(1, N_MFCC + 1)[:, None])  # c1..c12


def window_mfcc(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 32 ms window's level (dBFS) and MFCCs c1-c12."""
    n = len(pcm) // WIN
    x = pcm[: n * WIN].reshape(n, WIN).astype(np.float32) / 32768
    level = 10 * np.log10((x**2).mean(1) + 1e-10)
    power = np.abs(np.fft.rfft(x * _HANN, WIN)) ** 2 + 1e-10
    return level, np.log(power @ _FB.T + 1e-8) @ _DCT.T


class _Openings(GateAnalyzer):
    """The gate, noting each tentative opening, its outcome and the caller windows before it."""

    def __init__(self, params: GateParams) -> None:
        super().__init__(params)
        self.openings: list[dict[str, Any]] = []
        self.caller_windows: list[float] = []
        self._cur: dict[str, Any] | None = None

    def _flag(self, t0: float, caller: bool) -> None:
        if caller:
            self.caller_windows.append(t0)
        super()._flag(t0, caller)

    def _note(self, events: list[GateEvent], t_ms: float) -> list[GateEvent]:
        for e in events:
            if e.kind == "caller_tentative":
                self._cur = {"start": e.t_ms, "need": self.open_threshold_db(t_ms), "enrol": list(self.caller_windows)}
            elif e.kind in ("caller_start", "caller_revoked") and self._cur is not None:
                self._cur.update(confirmed=e.kind == "caller_start", decided=t_ms)
                self.openings.append(self._cur)
                self._cur = None
        return events

    def _decide_two_stage(self, t0: float, level: float, score: float, tilt: float, need: float) -> list:
        return self._note(super()._decide_two_stage(t0, level, score, tilt, need), t0 + WIN_MS)

    def vad_end(self, end_ms: float) -> list:
        return self._note(super().vad_end(end_ms), end_ms)


def _scored(start: float, labels: dict[str, Any]) -> bool:
    """In a background segment that gate_eval scores (speech, clear of the caller's turns)."""
    busy = [(t["start_ms"] - 500, t["end_ms"] + 1500) for t in labels["turns"]]
    for b in labels.get("background", []):
        if b["kind"] in ("tv", "second_speaker") and b["start_ms"] <= start + 150 <= b["end_ms"] + 400:
            if not any(min(b["end_ms"], y) > max(b["start_ms"], x) for x, y in busy):
                return True
    return False


def _nll(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return 0.5 * (((x - mean) ** 2) / var + np.log(var)).sum(1)


def measure(calls: list, gate: GateParams, vad: dict[str, float]) -> list[str]:
    world: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    half = len(calls) // 2
    for ci, call in enumerate(calls):
        vad_an, g = _speech_analyzer(call.conf, vad), _Openings(gate)
        for i in range(len(call.pcm) // WIN):
            w = call.pcm[i * WIN : (i + 1) * WIN]
            g.process_window(w)
            for e in vad_an.process(w):
                (g.vad_start if e.kind == "start" else g.vad_end)(e.t_ms)
        level, mfcc = window_mfcc(call.pcm)
        if ci < half:
            world.append(mfcc[level > np.percentile(level, 60)])
            continue
        for o in g.openings:
            y = _label(o["start"] + 150, call.labels)
            if y != 0:
                rows.append({**o, "caller": y == 1, "hit": y == -1 and _scored(o["start"], call.labels),
                             "level": level, "mfcc": mfcc})
    allw = np.concatenate(world)
    wm, wv = allw.mean(0), allw.var(0) + 1e-3
    out = [f"{len(calls)} calls (world model: first {half}; openings scored: last {len(calls) - half})"]
    for h in HORIZONS_MS:
        res = []
        for r in rows:
            enrol = (np.array(r["enrol"]) / WIN_MS).round().astype(int)
            if len(enrol) < MIN_ENROL:
                continue
            cm, cv = r["mfcc"][enrol].mean(0), 0.5 * r["mfcc"][enrol].var(0) + 0.5 * wv
            s0 = int(r["start"] / WIN_MS)
            s1 = int(((r["start"] + h) if h else r["decided"]) / WIN_MS)
            keep = r["level"][s0:s1] >= r["need"] - 6
            if keep.sum() < 2:
                continue
            x = r["mfcc"][s0:s1][keep]
            res.append((r["caller"], r["confirmed"], r["hit"], float(np.mean(_nll(x, wm, wv) - _nll(x, cm, cv)))))
        caller = np.array([s for c, k, _h, s in res if c and k])
        bg = np.array([s for c, k, _h, s in res if not c and k])
        hits = sorted(s for c, k, h_, s in res if h_ and k)
        shares = [f"{np.mean(caller < s):.1%}" for s in hits]
        out.append(f"  up to {f'{h} ms' if h else 'the decision'}: confirmed openings caller {len(caller)}, "
                   f"background {len(bg)}, AUC {auc(caller, bg):.3f}; gate_eval hits {len(hits)}, caller "
                   f"openings scoring lower than each: {', '.join(shares) or '-'}")
    return out


def main() -> None:
    from loguru import logger

    from processors.endpointer import load_listen_preset
    from turn_eval.evaluate import load_set

    logger.remove()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    preset = load_listen_preset("agent")
    if not preset.gate.confirm_ms:
        raise SystemExit("the agent preset's gate has one stage: no tentative openings to score")
    try:
        calls = load_set(args.folder, progress=True)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if len(calls) < 2:
        raise SystemExit(f"{args.folder}: {len(calls)} call(s); needs 2 or more (the first half builds the world model)")
    for line in measure(calls, preset.gate, preset.vad):
        print(line)


if __name__ == "__main__":
    main()
