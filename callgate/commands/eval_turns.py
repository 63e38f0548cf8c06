"""Evaluate turn-taking (background-speech gate + endpointer) on labelled WAVs, beside three baselines.

DIR holds WAVs and labels.json (scripts/make_turn_set.py builds one: where each caller turn starts and
truly ends, its inner pauses, the words of each spoken segment, the background-speech spans). In one
run on the same files it prints, for callgate (the workflow's preset in pipelines/presets/listen.json)
and for an 800 ms silence timer, Pipecat's default turn stop (Silero VAD + Smart-Turn v3, default
params) and plain Silero VAD without the gate: end-of-turn delay after the true end (median, p90),
premature ends per turn (turns with inner pauses, and all), background speech that started a turn or
a barge-in, caller speech lost, turn-start delay; and with --plot a trade-off curve (PNG).
--tune searches the gate and endpointer parameters on DIR (use the dev split, never the test split)
with optuna, as `callgate tune` does for AMD, and --write-preset stores the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from callgate.cli import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder of WAVs with labels.json")
    parser.add_argument("--workflow", default="agent", help="listen preset to run (default: agent)")
    parser.add_argument("--presets", type=Path, default=None, help="listen presets JSON (default: the shipped one)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N calls")
    parser.add_argument(
        "--systems", default=None, help="comma-separated subset of callgate,timer_800ms,pipecat_default,vad_only"
    )
    parser.add_argument("--stt-lag-ms", type=float, default=250.0, help="oracle STT: words known this late (250)")
    parser.add_argument("--infer-ms", type=float, default=64.0, help="Smart-Turn answer latency (64)")
    parser.add_argument("--no-text", action="store_true", help="callgate without the transcript signal")
    parser.add_argument("--no-audio", action="store_true", help="callgate without Smart-Turn")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="save the trade-off curve here")
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS", help="tune the preset on DIR first")
    parser.add_argument("--tune-what", choices=("both", "gate", "endpointer"), default="both")
    parser.add_argument("--tune-delay-ms", type=float, default=300.0,
                        help="with --tune: median delay the search aims under (300; lower leaves a margin)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-preset", action="store_true", help="with --tune: write the tuned preset")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    import sys

    from loguru import logger

    logger.remove()  # Silero/Pipecat debug chatter would bury the report
    logger.add(sys.stderr, level="WARNING")

    from processors.endpointer import LISTEN_PRESETS_PATH, TextCompletenessModel, load_listen_preset
    from turn_eval.evaluate import (
        DiskSmartTurn,
        EvalConfig,
        callgate_curve,
        evaluate,
        load_set,
        plot_tradeoff,
        timer_curve,
        tune,
        write_preset,
    )
    from turn_eval.metrics import format_table, format_two_stage
    from turn_eval.runner import SYSTEMS

    if not args.dir.is_dir():
        raise CliError(f"{args.dir}: not a directory")
    systems = tuple(s.strip() for s in args.systems.split(",")) if args.systems else SYSTEMS
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise CliError(f"unknown system(s) {', '.join(bad)} (have {', '.join(SYSTEMS)})")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    try:
        preset = load_listen_preset(args.workflow, args.presets)
        calls = load_set(args.dir, args.limit, progress=not args.json)
        text_model = None if args.no_text else TextCompletenessModel()
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    if not calls:
        raise CliError(f"{args.dir}: labels.json lists no files")
    cfg = EvalConfig(infer_ms=args.infer_ms, stt_lag_ms=args.stt_lag_ms, use_text=not args.no_text,
                     use_audio=not args.no_audio)
    smart = DiskSmartTurn(args.dir)
    out: dict = {"dir": str(args.dir), "calls": len(calls), "workflow": args.workflow,
                 "stt_lag_ms": cfg.stt_lag_ms, "infer_ms": cfg.infer_ms}
    try:
        if args.tune:
            preset, s, _hist = tune(calls, preset, smart, text_model, cfg, trials=args.tune, seed=args.seed,
                                    what=args.tune_what, delay_target_ms=args.tune_delay_ms)
            smart.save()
            print(f"tuned on {len(calls)} calls: premature {100 * s.premature_paused:.1f} % (paused turns), "
                  f"median delay {s.delay_p50_ms:.0f} ms, background started {100 * s.bg_started:.1f} %, "
                  f"caller lost {s.caller_lost_pct:.2f} %")
            if args.write_preset:
                path = write_preset(args.presets or LISTEN_PRESETS_PATH, args.workflow, preset, s, str(args.dir))
                print(f"wrote listen preset '{args.workflow}' to {path}")
        results = evaluate(calls, preset, smart, text_model, cfg, systems, progress=True)
        smart.save()
    except ImportError as e:
        raise CliError(f"{e.name} is needed for this (pip install 'callgate[tune]')") from e
    out["systems"] = {k: v.to_dict() for k, v in results.items()}
    if args.plot:
        curves = {"timer (ms)": timer_curve(calls, [300, 500, 800, 1200, 1600, 2000])}
        if "callgate" in systems:
            curves["callgate (patience x)"] = callgate_curve(calls, preset, smart, text_model, cfg,
                                                            [0.5, 0.75, 1.0, 1.25, 1.5])
        smart.save()
        path = plot_tradeoff(args.plot, curves, results)
        out["curves"] = curves
        out["plot"] = str(path)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    paused = next(iter(results.values()))
    print(f"{len(calls)} calls, {paused.turns} caller turns ({paused.paused_turns} with inner pauses), "
          f"{paused.bg_segments} background-speech segments away from caller turns; oracle STT lag "
          f"{cfg.stt_lag_ms:.0f} ms, Smart-Turn latency {cfg.infer_ms:.0f} ms\n")
    print(format_table(list(results.values())))
    print("\ndelay = ms from the true end of the turn to the final end; reply = when the LLM starts (greedy);"
          "\npremature = final end inside the turn, share of turns with pauses (all turns); missed = turns never"
          "\nended before the next began; bg start = background segments that started a turn/barge-in;"
          "\nfalse/min = turn starts away from caller speech per minute; lost % = caller speech outside caller"
          "\nspeech intervals; start = turn-start emission after the true start (p50, max).")
    for r in results.values():
        print(f"  {r.system}: background started by level {r.bg_by_level}; missed starts {r.missed_starts}; "
              f"tentative/turn {r.tentative_per_turn:.2f}, cancelled/turn {r.cancels_per_turn:.2f}")
    print("\nbackground-speech gate (background 6-20 dB below the caller; a barge-in is the gate opening, with two "
          "stages its confirmation):")
    for r in results.values():
        line = (f"  {r.system:16s} background segments that started a turn or a barge-in "
                f"{100 * r.bg_started:5.1f} % ({round(r.bg_started * r.bg_segments)}/{r.bg_segments}); "
                f"caller speech lost {r.caller_lost_pct:.2f} %")
        if r.gate_delay_max_ms is not None:
            line += (f"; turn starts the gate delayed > 100 ms: {r.gate_delayed_starts} (max delay "
                     f"{r.gate_delay_max_ms:.0f} ms); turns the gate never opened on: {r.gate_missed_turns}")
        if (two := format_two_stage(r)) is not None:
            line += f"\n  {'':16s} {two} (the delays above: at the tentative opening, when the bot pauses)"
        print(line)
    if args.plot:
        print("\ntrade-off curve (setting: median delay ms, premature ends on paused turns):")
        for name, pts in out["curves"].items():
            print(f"  {name}: " + "; ".join(f"{k:g}: {d:.0f} ms, {100 * pm:.1f} %" for k, d, pm in pts))
        print(f"trade-off curve saved to {out['plot']}")
    return 0
