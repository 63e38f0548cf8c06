"""The background-speech gate alone, beside plain VAD, on a labelled turn set (fast: no endpointer).

    python -m turn_eval.gate_eval turn_eval/data/real/test [--params '{"open_offset_db": 5}']
    python -m turn_eval.gate_eval turn_eval/data/real_big/dev --tune 40   # search the two-stage numbers

Both systems run on the production VAD state machine (processors.speech.SpeechAnalyzer, replaying the
Silero confidences cached by `callgate eval-turns`):

* `plain_vad`: every VAD start is a turn start or a barge-in; the caller is heard from VAD onset to end.
* `gate`: processors.gate.GateAnalyzer after that VAD; only its caller starts start a turn or a barge-in
  (with two stages: its confirmed openings; a revoked tentative opening only paused the bot, counted apart);
  the caller is heard from the start it claims to the end of that VAD segment (a VAD segment the gate
  never opened on is lost).

Figures (turn_eval.metrics defines them): background-speech segments (TV, second speaker; 6-20 dB below
the caller, away from the caller's turns) during which a turn start or barge-in fired; caller speech
lost (labelled caller speech outside every heard interval); caller turn starts the gate delayed by more
than 100 ms over plain VAD (count, max); turns the gate never opened on. Broken down by level, kind
and background voice (synthetic or a real recording). `callgate eval-turns` gives the same background
and delay figures for the whole stack (gate + endpointer).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.gate import WIN, WIN_MS, GateAnalyzer, GateParams
from turn_eval.metrics import (
    Summary,
    Tally,
    background_hits,
    format_two_stage,
    gate_delay,
    score_call,
    summarize,
    vad_on_at,
)
from turn_eval.runner import CallInputs, SystemRun, _speech_analyzer, gated_windows


def run_plain_vad(call: CallInputs, vad_params: dict[str, float]) -> SystemRun:
    run = SystemRun()
    vad = _speech_analyzer(call.conf, vad_params)
    onset = None
    n = len(call.pcm) // WIN
    for i in range(n):
        for e in vad.process(call.pcm[i * WIN : (i + 1) * WIN]):
            if e.kind == "start":
                run.starts.append(((i + 1) * WIN_MS, e.t_ms))
                onset = e.t_ms
            elif onset is not None:
                run.speech.append((onset, e.t_ms))
                onset = None
    if onset is not None:
        run.speech.append((onset, n * WIN_MS))
    return run


def run_gate(
    call: CallInputs, gate_params: GateParams, vad_params: dict[str, float], gate: GateAnalyzer | None = None
) -> SystemRun:
    run = SystemRun()
    vad = _speech_analyzer(call.conf, vad_params)
    gate = gate or GateAnalyzer(gate_params)
    opened: float | None = None  # the caller's claimed start in the current VAD segment
    n = len(call.pcm) // WIN
    for i, _win, events, vad_end in gated_windows(call, vad, gate, run):
        for g in events:
            if g.kind == "caller_start":
                run.starts.append(((i + 1) * WIN_MS, g.t_ms))
                opened = g.t_ms if opened is None else opened
        if vad_end is not None and opened is not None:
            # The caller is heard from the start the gate claimed to the end of that VAD segment (a word's
            # soft tail below the hold level still reaches the STT: audio flows, only the edges are gated).
            run.speech.append((opened, vad_end))
            opened = None
    if opened is not None:
        run.speech.append((opened, n * WIN_MS))
    return run


@dataclass
class GateReport:
    summaries: dict[str, Summary]
    breakdown: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # system -> axis -> bucket

    def to_dict(self) -> dict[str, Any]:
        return {"systems": {k: v.to_dict() for k, v in self.summaries.items()}, "breakdown": self.breakdown}


def _bucket_level(rel: float) -> str:
    return "-6..-8 dB" if rel > -8 else "-8..-10 dB" if rel > -10 else "-10..-15 dB" if rel > -15 else "-15..-20 dB"


def evaluate_gate(
    calls: list[CallInputs], gate_params: GateParams, vad_params: dict[str, float]
) -> GateReport:
    tallies = {"plain_vad": Tally(), "gate": Tally()}
    counts: dict[str, dict[str, dict[str, list[int]]]] = {
        s: defaultdict(lambda: defaultdict(lambda: [0, 0])) for s in tallies
    }
    for c in calls:
        for system in tallies:
            run = run_plain_vad(c, vad_params) if system == "plain_vad" else run_gate(c, gate_params, vad_params)
            score_call(c.labels, run, tallies[system])
            for bg, hit in background_hits(c.labels, run):
                voice = str(bg.get("bg_voice", "tts:")).split(":")[0]
                for axis, key in (("level", _bucket_level(float(bg["rel_db"]))), ("kind", bg["kind"]),
                                  ("voice", "real recording" if voice == "real" else "synthetic")):
                    counts[system][axis][key][0] += 1
                    counts[system][axis][key][1] += hit
    report = GateReport({s: summarize(s, t) for s, t in tallies.items()})
    for s, axes in counts.items():
        report.breakdown[s] = {ax: {k: f"{v[1]}/{v[0]}" for k, v in sorted(b.items())} for ax, b in axes.items()}
    return report


def format_report(r: GateReport) -> str:
    lines = [f"{'system':10s} {'bg segments started a turn/barge-in':>36s} {'caller lost':>11s} "
             f"{'starts delayed >100 ms':>22s} {'max delay':>9s} {'gate missed turns':>17s}"]
    for name, s in r.summaries.items():
        n_bg = round(s.bg_started * s.bg_segments)
        delayed = "-" if name == "plain_vad" else str(s.gate_delayed_starts)
        mx = "-" if name == "plain_vad" or s.gate_delay_max_ms is None else f"{s.gate_delay_max_ms:.0f} ms"
        missed = "-" if name == "plain_vad" else str(s.gate_missed_turns)
        lines.append(f"{name:10s} {100 * s.bg_started:28.1f} % ({n_bg}/{s.bg_segments}) {s.caller_lost_pct:9.2f} % "
                     f"{delayed:>22s} {mx:>9s} {missed:>17s}")
        if (two := format_two_stage(s)) is not None:
            lines.append(f"{'':10s} {two}")
    for name, axes in r.breakdown.items():
        lines.append(f"  {name}: " + "; ".join(f"{ax} {b}" for ax, b in axes.items()))
    return "\n".join(lines)


class _ExplainingGate(GateAnalyzer):
    """The gate, noting at each closed-gate decision its window peak and open threshold, and its state
    when it opens (for --explain)."""

    def __init__(self, params: GateParams) -> None:
        super().__init__(params)
        self.decisions: dict[int, tuple[float, float]] = {}  # window index -> (3-window peak, threshold)
        self.openings: list[dict[str, Any]] = []

    def _decide(self, t0: float, level: float, peak: float, tilt: float) -> list:
        was, need = self.caller_open, self.open_threshold_db(t0)
        events = super()._decide(t0, level, peak, tilt)
        if not was:
            self.decisions[round(t0 / WIN_MS)] = (peak, need)
            if self.caller_open:
                self.openings.append({"t0": t0, "peak": peak, "need": need, "caller": self._baseline,
                                      "bg": self._bg_level, "media": self.media_mode})
        return events


def _db(v: float | None) -> str:
    return "not learned" if v is None else f"{v:.1f} dBFS"


def explain(calls: list[CallInputs], gate_params: GateParams, vad_params: dict[str, float]) -> list[str]:
    """One line per background segment the gate opened on and per caller start it delayed by more than
    100 ms, with the gate's state then: what to look at before changing the gate."""
    lines: list[str] = []
    n_hits = n_unlearned = 0
    for c in calls:
        gate = _ExplainingGate(gate_params)
        run = run_gate(c, gate_params, vad_params, gate)
        for bg, hit in background_hits(c.labels, run):
            a, b = float(bg["start_ms"]), float(bg["end_ms"])
            o = next((o for o in gate.openings if a - 2 * WIN_MS <= o["t0"] <= b + 400), None)
            if not hit or o is None:
                continue
            n_hits += 1
            n_unlearned += o["bg"] is None
            lines.append(
                f"{c.name} background {bg['kind']} {bg['rel_db']:+.1f} dB ({bg.get('bg_voice', '?')}) "
                f"{a:.0f}-{b:.0f} ms: opened at {o['t0'] + WIN_MS:.0f} ms, peak {o['peak']:.1f} vs threshold "
                f"{o['need']:.1f} dBFS; caller level {_db(o['caller'])}, background level {_db(o['bg'])}"
                f"{', media mode' if o['media'] else ''}")
        for k, turn in enumerate(sorted(c.labels["turns"], key=lambda t: t["start_ms"])):
            delay, ref = gate_delay(turn, run)
            if delay is not None and delay <= 100.0:
                continue
            s = float(turn["start_ms"])
            near = [(i, d) for i, d in gate.decisions.items() if s - 300 <= i * WIN_MS and (i + 1) * WIN_MS <= ref + 100]
            short = min((d[1] - d[0] for _i, d in near), default=float("nan"))
            on_bg = vad_on_at(run, s)
            lines.append(
                f"{c.name} caller turn {k} at {s:.0f} ms: "
                f"{'never opened' if delay is None else f'opened {delay:.0f} ms after plain VAD'} "
                f"(plain VAD: {ref - s:.0f} ms after the turn began); "
                f"by then its best window was {short:.1f} dB under the threshold"
                f"{'; the VAD was already on (background)' if on_bg else ''}; condition {c.labels.get('condition')}")
    lines.append(f"background segments opened on: {n_hits}, {n_unlearned} of them before any background "
                 "level was learned")
    return lines


# What `--tune` searches by default (the two-stage opening) and what it minimizes: background segments
# let in, plus starts delayed > 100 ms (x5: the issue allows none), turns never opened on (x20), background pauses (x0.1), and
# caller speech lost beyond 3.2 % (x10 per point).
TUNE_SPACE = {"confirm_quiet_db": (0.0, 4.0), "confirm_windows": (1.0, 4.99), "confirm_ms": (500.0, 1300.0),
              "confirm_extra_db": (-3.0, 1.0), "tentative_db": (2.0, 5.5), "tentative_quiet_db": (0.0, 6.0)}


def tune_objective(s: Summary) -> float:
    hits = s.bg_started * s.bg_segments
    lost = max(0.0, s.caller_lost_pct - 3.2)
    return hits + 5 * s.gate_delayed_starts + 20 * s.gate_missed_turns + 0.1 * (s.bg_paused or 0) + 10 * lost


def tune_gate(calls: list[CallInputs], base: GateParams, vad_params: dict[str, float], trials: int,
              space: dict[str, tuple[float, float]] = TUNE_SPACE, seed: int = 1) -> tuple[GateParams, list[str]]:
    """Optuna TPE over `space` from `base` (tried first); returns the best parameters and a line per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    g0 = base.to_dict()
    study.enqueue_trial({k: g0[k] for k in space})
    lines: list[str] = []

    def params(trial: optuna.Trial) -> GateParams:
        return GateParams.from_dict({**g0, **{k: trial.suggest_float(k, lo, hi) for k, (lo, hi) in space.items()}})

    def run(trial: optuna.Trial) -> float:
        s = evaluate_gate(calls, params(trial), vad_params).summaries["gate"]
        v = tune_objective(s)
        lines.append(f"trial {trial.number}: objective {v:.1f}, background {s.bg_started * s.bg_segments:.0f}/"
                     f"{s.bg_segments}, delayed {s.gate_delayed_starts}, missed {s.gate_missed_turns}, paused "
                     f"{s.bg_paused}, lost {s.caller_lost_pct:.2f} % {json.dumps(trial.params)}")
        print(lines[-1], flush=True)
        return v

    study.optimize(run, n_trials=trials)
    return params(study.best_trial), lines


def _json_object(text: str, option: str) -> dict[str, Any]:
    """`text` parsed as a JSON object; ValueError naming `option` otherwise."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{option}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{option}: want a JSON object, {{\"name\": ...}}, got {text!r}")
    return doc


def parse_space(text: str | None) -> dict[str, tuple[float, float]]:
    """`--space`: {"gate parameter": [low, high], ...}; ValueError naming what is wrong."""
    names = set(GateParams().to_dict())
    space = {}
    for k, v in _json_object(text or "{}", "--space").items():
        if k not in names:
            raise ValueError(f"--space: unknown gate parameter {k!r}")
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v) and v[0] < v[1]):
            raise ValueError(f"--space: {k} wants [low, high] with low < high, got {json.dumps(v)}")
        space[k] = (float(v[0]), float(v[1]))
    return space


def main() -> None:
    from loguru import logger

    from processors.endpointer import load_listen_preset
    from turn_eval.evaluate import load_set

    logger.remove()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--workflow", default="agent")
    p.add_argument("--params", default=None, help="JSON gate parameters over the preset's")
    p.add_argument("--json", action="store_true")
    p.add_argument("--explain", action="store_true",
                   help="also list each background segment the gate opened on and each delayed start, with its state")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="search the two-stage numbers (TUNE_SPACE) for N trials on this set; print the best")
    p.add_argument("--space", default=None, metavar="JSON",
                   help='with --tune: more parameters to search, {"name": [low, high]} (added to TUNE_SPACE)')
    p.add_argument("--seed", type=int, default=1, help="with --tune: the sampler's seed")
    args = p.parse_args()
    if args.tune < 0:
        raise SystemExit("--tune must be >= 0")
    try:
        preset = load_listen_preset(args.workflow)
        gp = preset.gate
        if args.params:
            over = _json_object(args.params, "--params")
            try:
                gp = GateParams.from_dict({**gp.to_dict(), **over})
            except (TypeError, ValueError) as e:  # an unknown name, a value that is not a number
                raise ValueError(f"--params: {e}") from None
        space = {**TUNE_SPACE, **parse_space(args.space)} if args.tune else TUNE_SPACE
        calls = load_set(args.folder)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    if not calls:
        raise SystemExit(f"{args.folder}: labels.json lists no files")
    if args.tune:
        best, _lines = tune_gate(calls, gp, preset.vad, args.tune, space, args.seed)
        print("best:", json.dumps({k: getattr(best, k) for k in space}))
        gp = best
    report = evaluate_gate(calls, gp, preset.vad)
    lines = explain(calls, gp, preset.vad) if args.explain else []
    if args.json:
        print(json.dumps({**report.to_dict(), **({"explain": lines} if args.explain else {})}, indent=2))
    else:
        print(f"{args.folder}: {len(calls)} calls, {report.summaries['gate'].turns} caller turns")
        print(format_report(report))
        print("\n".join(lines))


if __name__ == "__main__":
    main()
