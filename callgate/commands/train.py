"""Train the streaming AMD model on a synthetic corpus and export amd_model/amd.onnx + amd.json.

`callgate train --corpus DIR` builds the corpus first if DIR has no labels.csv (--n calls, --seed),
then trains (torch, CPU), exports ONNX, checks onnxruntime == torch and prints held-out metrics.
Needs the `train` extra (torch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from callgate.cli import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`train` options."""
    from callgate.commands.corpus import engine_list

    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (built here if missing)")
    parser.add_argument("--n", type=int, default=16000, help="calls to build if the corpus is missing")
    parser.add_argument("--seed", type=int, default=11, help="corpus seed if the corpus is missing")
    parser.add_argument("--workers", type=int, default=2, help="corpus build processes")
    parser.add_argument("--engines", type=engine_list, default=None, metavar="E1,E2",
                        help="TTS engines of a corpus built here (default: every installed one)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where amd.onnx/amd.json go (default amd_model/)"
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=160, help="GRU width (the ONNX state size)")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="training wall-time budget per member")
    parser.add_argument(
        "--members", type=int, default=3, help="nets trained with seeds 0..K-1 and averaged into one ONNX graph"
    )
    parser.add_argument("--jobs", type=int, default=2, help="members trained at once (one process each)")
    parser.add_argument(
        "--eval-only", action="store_true", help="only evaluate the exported model on DIR/eval"
    )


def run(args: argparse.Namespace) -> int:
    """Build the corpus if needed, train, export, report."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise CliError(
            "training needs torch: pip install 'callgate[train]' (torch==2.13.0, CPU build)"
        ) from e
    from amd_model.tools import corpus, train

    out = args.out or train.HERE
    if args.corpus.exists() and not args.corpus.is_dir():
        raise CliError(f"--corpus {args.corpus}: not a directory")
    if args.eval_only:
        if not (args.corpus / "eval" / "meta.jsonl").is_file():
            raise CliError(f"{args.corpus}: no eval/meta.jsonl (build the corpus with `callgate corpus build`)")
        try:
            print(json.dumps(train.evaluate(out / "amd.onnx", args.corpus / "eval"), indent=1))
        except FileNotFoundError as e:
            raise CliError(str(e)) from e
        return 0
    if args.members < 1 or args.jobs < 1:  # before a corpus build that can take hours
        raise CliError("--members and --jobs must be >= 1")
    if not (args.corpus / "meta.jsonl").exists():
        if args.n <= 0 or args.workers <= 0:
            raise CliError("--n and --workers must be positive")
        print(f"no corpus at {args.corpus}: building {args.n} calls (seed {args.seed})")
        try:
            corpus.build(args.corpus, args.n, args.seed, workers=args.workers, engines=args.engines)
        except (RuntimeError, ValueError) as e:
            raise CliError(str(e)) from e
    info = train.train(
        args.corpus,
        out,
        epochs=args.epochs,
        hidden=args.hidden,
        max_minutes=args.max_minutes,
        members=args.members,
        jobs=args.jobs,
    )
    print(json.dumps(info["heldout"], indent=1))
    return 0
