"""Tune a workflow's AMD detectors on recorded traces (multi-objective, optuna NSGA-II).

Replays every trace in TRACES (from `callgate eval --traces` or live calls with TRACE_DIR set) through
the production decision layer, searches detector thresholds, windows, delays and silence requirements
over human precision, human recall and median latency, prints the Pareto front, picks a point by the
workflow's rule (parallel_dial: max recall with precision >= 0.99; power_dial: max precision with
recall >= 0.99; others: max accuracy with median human latency <= 500 ms and machine <= 900 ms), writes that workflow's preset and plots the trade-off.
Needs optuna and matplotlib (the `tune` extra, also pulled by `test` and `train`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from callgate.cli import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "traces", type=Path, metavar="TRACES", help="folder of trace JSON files (or one file)"
    )
    parser.add_argument("--workflow", required=True, help="preset to tune (parallel_dial, power_dial, ...)")
    parser.add_argument("--trials", type=int, default=200, help="optuna trials (default 200)")
    parser.add_argument(
        "--population", type=int, default=None, help="NSGA-II population (default trials/4, 8..50)"
    )
    parser.add_argument("--bound", type=float, default=None, help="the rule's bound (default 0.99)")
    parser.add_argument(
        "--max-human-latency",
        type=float,
        default=None,
        metavar="MS",
        help="cap on the median human latency (default: 500 for accuracy-picked workflows)",
    )
    parser.add_argument(
        "--max-machine-latency",
        type=float,
        default=None,
        metavar="MS",
        help="cap on the median machine latency (default: 900 for accuracy-picked workflows)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PRESET_FILE",
        help="presets file to update (default: the shipped pipelines/presets/amd.json)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="presets file to start from (default: --out if it exists, else the shipped one)",
    )
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="save the trade-off plot here")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the front and the choice, write nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the chosen preset and its figures as JSON")
    parser.add_argument(
        "--detectors",
        default=None,
        metavar="NAMES",
        help="comma-separated detector names to search (default: every human/machine/ivr/intercept one)",
    )


def run(args: argparse.Namespace) -> int:
    from amd_model.tools.tuning import (
        COUNTERPART,
        TuningDependencyError,
        format_front,
        plot_tradeoff,
        tune,
        write_preset,
    )
    from amd_model.traces import load_traces
    from processors.amd_decision import DEFAULT_PRESETS_PATH, load_presets, preset_to_json

    out = args.out or DEFAULT_PRESETS_PATH
    if out.is_dir():
        raise CliError(f"--out {out}: a folder, not a presets JSON file")
    base_path = args.base or (out if out.is_file() else DEFAULT_PRESETS_PATH)
    try:
        presets = load_presets(base_path)
        traces = load_traces(args.traces)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CliError(str(e)) from e
    if args.workflow not in presets:
        raise CliError(
            f"no preset for workflow {args.workflow!r} in {base_path} (have: {', '.join(presets)})"
        )
    if args.trials < 1:
        raise CliError("--trials must be >= 1")
    if args.population is not None and args.population < 2:
        raise CliError("--population must be >= 2 (NSGA-II breeds pairs)")
    if args.bound is not None and not 0 < args.bound <= 1:
        raise CliError("--bound must be in (0, 1]: the floor on human precision or recall")
    counterpart = presets.get(COUNTERPART.get(args.workflow, ""))
    try:
        result = tune(
            traces,
            args.workflow,
            presets[args.workflow],
            counterpart=counterpart,
            trials=args.trials,
            seed=args.seed,
            population_size=args.population,
            bound=args.bound,
            max_human_latency_ms=args.max_human_latency,
            max_machine_latency_ms=args.max_machine_latency,
            only=[n.strip() for n in args.detectors.split(",") if n.strip()] if args.detectors else None,
            progress=False,
        )
    except TuningDependencyError as e:
        raise CliError(str(e)) from e
    except ValueError as e:
        raise CliError(str(e)) from e
    print(format_front(result))
    s = result.chosen.stats
    print(
        f"\nchosen for {args.workflow}: {result.chosen.origin}: human precision {s.precision:.3f}, "
        f"recall {s.recall:.3f}, accuracy {s.accuracy:.3f}, median latency {s.latency_p50_ms:.0f} ms, "
        f"false human {s.false_human}, false machine {s.false_machine} on {s.n} traces"
    )
    if not args.dry_run:
        path = write_preset(out, args.workflow, result, template=base_path, traces=str(args.traces))
        print(f"wrote preset '{args.workflow}' to {path}")
    if args.plot:
        try:
            print(f"plot saved to {plot_tradeoff(result, args.plot)}")
        except TuningDependencyError as e:
            raise CliError(str(e)) from e
    if args.json:
        print(
            json.dumps(
                {
                    "workflow": args.workflow,
                    "stats": s.to_dict(),
                    "detectors": preset_to_json(result.chosen.detectors),
                },
                indent=2,
            )
        )
    return 0
