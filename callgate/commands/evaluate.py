"""Evaluate answering-machine detection on labelled WAVs, beside an Asterisk app_amd baseline.

DIR holds WAVs and labels.csv (`file,label[,beep_onset_ms]`; label = human, machine, ivr,
carrier_intercept or unknown; extra columns such as subtype and split are used when present), plus an
optional meta.jsonl (speech_onset_ms, first_utterance_end_ms per file) for latency anchors. Prints
accuracy, per-class precision/recall, confusion, latency percentiles (human verdicts from the end of
the first utterance, machine verdicts from speech onset) and the business-pickup human rate, for
callgate and for app_amd's default algorithm on the same files.

First, unless --no-real, the same two systems on every real recording available (the development
greetings, `--real DIR`, default CALLGATE_DEV_GREETINGS or ../shared/data/dev_greetings): the share
called machine and the median machine verdict after the greeting's onset, split into the greetings held
out from training and those mixed into training calls; then real people answering (pickups built from
the read speech that Debian's alsa-utils, pocketsphinx-testdata and ktuberling-data ship, when installed: the share
called human and the human verdict's delay). The synthetic split's figures hold for that corpus only;
these are the ones a user's real calls resemble.

`--folds` (DIR = a corpus built with `callgate corpus build --real-pool all`) measures generalization
instead: leave-one-voice-family-out folds and k-fold cross-validation over the real greetings, a net
trained per fold under a declared budget (--fold-minutes, --fold-epochs), the shipped model's figures
on the same test calls beside each fold (it saw every family in training: not held out). Trained
folds are kept in DIR/folds/ and reused when rerun with the same budget.
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
    parser.add_argument(
        "--real", type=Path, default=None, metavar="DIR", help="real greetings (default: the dev greetings)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real-recordings report")
    parser.add_argument(
        "--folds",
        action="store_true",
        help="generalization folds on the corpus DIR (leave-one-voice-family-out + real-greeting CV)",
    )
    parser.add_argument("--fold-minutes", type=float, default=5.0, help="training wall-clock budget per fold")
    parser.add_argument("--fold-epochs", type=int, default=12, help="at most this many epochs per fold")
    parser.add_argument("--fold-warp", type=float, default=0.0,
                        help="train each fold with vocal tract length perturbation, alpha in 1 +- this (0 = off)")
    parser.add_argument("--cv", type=int, default=5, help="real-greeting cross-validation folds (default 5)")
    parser.add_argument(
        "--only", action="append", default=None, metavar="FOLD", help="run only this fold (repeatable)"
    )
    parser.add_argument(
        "--test-corpus",
        type=Path,
        default=None,
        metavar="DIR",
        help="--folds: test on this corpus's calls (same seed and size, e.g. the v1 channel of a v2 corpus)",
    )
    parser.add_argument(
        "--max-test", type=int, default=400, help="--folds: at most N test calls per voice family (fixed sample)"
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the printed table here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from loguru import logger

    from amd_model.tools.corpus import DEV_GREETINGS
    from amd_model.tools.evaluation import (
        evaluate_dir,
        evaluate_real_greetings,
        evaluate_real_humans,
        format_humans_report,
        format_real_report,
        format_report,
        read_labels,
    )
    from processors.amd_decision import load_presets

    logger.remove()  # Silero/Pipecat debug chatter would bury the report
    logger.add(sys.stderr, level="WARNING")
    if not args.dir.is_dir():
        raise CliError(f"{args.dir}: not a directory")
    real_dir = None if args.no_real else (args.real or DEV_GREETINGS)
    if args.real is not None and not args.real.is_dir():
        raise CliError(f"{args.real}: not a directory")
    if args.traces is not None and args.traces.exists() and not args.traces.is_dir():
        raise CliError(f"--traces {args.traces}: not a directory")
    if args.report is not None and args.report.is_dir():
        raise CliError(f"--report {args.report}: a folder, not a file")
    if args.jobs < 1:
        raise CliError("--jobs must be >= 1")
    if args.folds:
        return _run_folds(args, real_dir)
    real = humans = None
    try:
        read_labels(args.dir, args.labels, args.meta, args.split)  # bad input fails before the long part
        if real_dir is not None and real_dir.is_dir():
            detectors = load_presets(args.presets)[args.workflow]
            real = evaluate_real_greetings(real_dir, detectors, workflow=args.workflow, model_path=args.model)
            if not args.json:
                print(format_real_report(real) + "\n", flush=True)
        if real_dir is not None:
            detectors = load_presets(args.presets)[args.workflow]
            humans = evaluate_real_humans(detectors, workflow=args.workflow, model_path=args.model,
                                          progress=not args.no_progress and not args.json)
            if not args.json:
                print((format_humans_report(humans) if humans else "Real human voices: skipped (apt-get install "
                       "alsa-utils pocketsphinx-testdata ktuberling-data to measure them)") + "\n", flush=True)
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
            jobs=args.jobs,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise CliError(_message(e)) from e
    table = format_report(rep)
    if args.json:
        extra = {k: v for k, v in (("real_recordings", real), ("real_humans", humans)) if v}
        print(json.dumps({**extra, **rep}, indent=2))
    else:
        print(table)
    if args.report:
        args.report.write_text(table + "\n")
    return 0


def _message(e: Exception) -> str:
    """The error's text; a KeyError's own str() wraps it in quotes, so take its argument instead."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _run_folds(args: argparse.Namespace, real_dir: Path | None) -> int:
    """`callgate eval DIR --folds`: the generalization table (training per fold; needs the train extra)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise CliError("--folds trains a net per fold and needs torch: pip install 'callgate[train]'") from e
    from amd_model.tools.folds import Budget, format_folds, run_folds
    from processors.amd_decision import load_presets

    if args.fold_minutes <= 0 or args.fold_epochs < 1 or args.cv < 2 or not 0 <= args.fold_warp < 0.5:
        raise CliError("--fold-minutes must be > 0, --fold-epochs >= 1, --cv >= 2, 0 <= --fold-warp < 0.5")
    try:
        detectors = load_presets(args.presets)[args.workflow]
        rep = run_folds(
            args.dir,
            real_dir or Path("/nonexistent"),
            detectors,
            budget=Budget(minutes=args.fold_minutes, max_epochs=args.fold_epochs, warp=args.fold_warp),
            cv=args.cv,
            ref_model_path=args.model,
            only=args.only,
            progress=not args.no_progress,
            test_corpus=args.test_corpus,
            max_test=args.max_test,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise CliError(_message(e)) from e
    text = json.dumps(rep, indent=2, default=str) if args.json else format_folds(rep)
    print(text)
    if args.report:
        args.report.write_text(format_folds(rep) + "\n")
    return 0
