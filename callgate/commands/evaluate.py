"""Evaluate answering-machine detection on labelled WAVs, beside an Asterisk app_amd baseline.

DIR holds WAVs and labels.csv (`file,label[,beep_onset_ms]`; label = human, machine, ivr,
carrier_intercept or unknown; extra columns such as subtype and split are used when present), plus an
optional meta.jsonl (speech_onset_ms, first_utterance_end_ms per file) for latency anchors. Prints
accuracy, per-class precision/recall, confusion, latency percentiles (human verdicts from the end of
the first utterance, machine verdicts from speech onset) and the business-pickup human rate, for
callgate and for app_amd's default algorithm on the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from callgate.cli import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder of WAVs with labels.csv")
    parser.add_argument(
        "--workflow",
        default="default",
        help="AMD preset to run (default, parallel_dial, power_dial, voicemail_drop)",
    )
    parser.add_argument("--presets", type=Path, default=None, help="presets JSON (default: the shipped one)")
    parser.add_argument(
        "--labels", type=Path, default=None, help="labels.csv elsewhere (paths stay relative to DIR)"
    )
    parser.add_argument("--meta", type=Path, default=None, help="meta.jsonl (default: next to labels.csv)")
    parser.add_argument("--split", default=None, help="only rows whose split column equals this (e.g. test)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: amd_model/amd.onnx)")
    parser.add_argument(
        "--traces",
        type=Path,
        default=None,
        metavar="OUT_DIR",
        help="save each call's AMD trace here (input for `callgate tune`)",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N calls")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1; 2 on a 2-core box)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from loguru import logger

    from amd_model.tools.evaluation import evaluate_dir, format_report

    logger.remove()  # Silero/Pipecat debug chatter would bury the report
    logger.add(sys.stderr, level="WARNING")
    if not args.dir.is_dir():
        raise CliError(f"{args.dir}: not a directory")
    try:
        rep = evaluate_dir(
            args.dir,
            workflow=args.workflow,
            presets_path=args.presets,
            labels_path=args.labels,
            meta_path=args.meta,
            split=args.split,
            traces_dir=args.traces,
            model_path=args.model,
            limit=args.limit,
            progress=not args.no_progress,
            jobs=max(1, args.jobs),
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise CliError(str(e).strip("'\"")) from e
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0
