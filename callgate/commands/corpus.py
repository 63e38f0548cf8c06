"""Build the synthetic labelled phone-call corpus used to train and evaluate the AMD model.

`callgate corpus build --out DIR --n N --seed S [--workers 2]` writes DIR/calls/*.wav, DIR/labels.csv
(file,label,beep_onset_ms,...: what `callgate eval DIR` reads), DIR/meta.jsonl (subtypes, voices,
timings, segments, split) and DIR/eval/ (held-out test split + held-out real dev greetings).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from callgate.cli import CliError


def engine_list(value: str) -> list[str]:
    """`--engines a,b` -> ["a", "b"]."""
    names = [e.strip() for e in value.split(",") if e.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one TTS engine")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`corpus build` options."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="synthesize N labelled calls into DIR (reproducible from --seed)")
    b.add_argument(
        "--out", type=Path, required=True, help="output folder (outside the repo, or amd_model/corpus_data/)"
    )
    b.add_argument("--n", type=int, default=4000, help="number of calls (default 4000)")
    b.add_argument("--seed", type=int, default=1, help="corpus seed: same seed => same calls")
    b.add_argument("--workers", type=int, default=2, help="process pool size (default 2)")
    b.add_argument(
        "--real-pool",
        choices=("split", "all"),
        default="split",
        help="real greetings in calls: 'split' = fixed training/held-out halves (default); 'all' = any, "
        "for `callgate eval --folds` corpora, whose folds drop calls by greeting file",
    )
    b.add_argument(
        "--channel",
        choices=("v1", "v2"),
        default="v1",
        help="v2 adds room reverb, level ramps, handset AGC, clipping and AMR-NB round trips to v1's channel",
    )
    b.add_argument("--engines", type=engine_list, default=None, metavar="E1,E2",
                   help="TTS engines to draw voices from (default: espeak-ng, flite and piper where installed; "
                        "`all` adds festival, mbrola and pico, installing them as root); a seed reproduces a "
                        "corpus only with the same set")
    b.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def run(args: argparse.Namespace) -> int:
    """Build the corpus and print its composition."""
    from amd_model.tools import corpus

    if args.n <= 0:
        raise CliError("--n must be positive")
    if args.workers <= 0:
        raise CliError("--workers must be positive")
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out}: not a directory")
    try:
        metas = corpus.build(
            args.out,
            args.n,
            args.seed,
            workers=args.workers,
            progress=not args.no_progress,
            real_pool=args.real_pool,
            channel=args.channel,
            engines=args.engines,
        )
    except (RuntimeError, ValueError) as e:
        raise CliError(str(e)) from e
    by = collections.Counter((m["label"], m["subtype"]) for m in metas)
    splits = collections.Counter(m["split"] for m in metas)
    print(f"wrote {len(metas)} calls to {args.out} (splits: {dict(splits)})")
    for (label, subtype), k in sorted(by.items()):
        print(f"  {label:18s} {subtype:20s} {k}")
    return 0
