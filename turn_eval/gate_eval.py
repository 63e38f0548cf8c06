"""The background-speech gate alone, beside plain VAD, on a labelled turn set (fast: no endpointer).

    python -m turn_eval.gate_eval turn_eval/data/real/test [--params '{"open_offset_db": 5}']

Both systems run on the production VAD state machine (processors.speech.SpeechAnalyzer, replaying the
Silero confidences cached by `callgate eval-turns`):

* `plain_vad`: every VAD start is a turn start or a barge-in; the caller is heard from VAD onset to end.
* `gate`: processors.gate.GateAnalyzer after that VAD; only its caller starts start a turn or a barge-in;
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
from turn_eval.metrics import Summary, Tally, background_hits, score_call, summarize
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


def run_gate(call: CallInputs, gate_params: GateParams, vad_params: dict[str, float]) -> SystemRun:
    run = SystemRun()
    vad = _speech_analyzer(call.conf, vad_params)
    gate = GateAnalyzer(gate_params)
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
    for name, axes in r.breakdown.items():
        lines.append(f"  {name}: " + "; ".join(f"{ax} {b}" for ax, b in axes.items()))
    return "\n".join(lines)


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
    args = p.parse_args()
    preset = load_listen_preset(args.workflow)
    gp = preset.gate
    if args.params:
        gp = GateParams.from_dict({**gp.to_dict(), **json.loads(args.params)})
    calls = load_set(args.folder)
    report = evaluate_gate(calls, gp, preset.vad)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{args.folder}: {len(calls)} calls, {report.summaries['gate'].turns} caller turns")
        print(format_report(report))


if __name__ == "__main__":
    main()
