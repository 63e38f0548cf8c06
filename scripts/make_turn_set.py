"""Build the turn-taking dev and test sets for `callgate eval-turns` (reproducible from --seed).

    python scripts/make_turn_set.py --out turn_eval/data --dev 60 --test 40 --seed 9

writes OUT/dev/*.wav + labels.json and OUT/test/*.wav + labels.json (git-ignored). Needs espeak-ng,
flite and the Asterisk sounds/hold music (scripts/system_deps.sh installs them). With
--real-background ../shared/data/dev_greetings half of the background talkers are real recorded people
(read at build time; the recordings never enter the repository).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from turn_eval.dataset import build_set, default_workers  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("turn_eval/data"))
    p.add_argument("--dev", type=int, default=60, help="calls in the dev split (tuning)")
    p.add_argument("--test", type=int, default=40, help="calls in the held-out test split")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--real-background", type=Path, default=None, metavar="DIR",
                   help="also use real recorded voices from DIR (the development greetings) as background talkers")
    args = p.parse_args()
    for split, n in (("dev", args.dev), ("test", args.test)):
        if n <= 0:
            continue
        t0 = time.time()
        path = build_set(args.out / split, split, n, seed=args.seed, workers=args.workers,
                         real_dir=args.real_background)
        print(f"{split}: {n} calls -> {path} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
