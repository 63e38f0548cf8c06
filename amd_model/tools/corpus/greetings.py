"""The real development greetings (../shared/data/dev_greetings) and their fixed split.

A fixed half (every other file in sorted order) is mixed into training calls; the other half is held out
(test split + eval/ copies). They are read at build time only and never copied into the repository. Why
apart: both the call assembly and the index writer need the same split, and tests swap the set through
one name here, dev_greetings().
"""

from __future__ import annotations

import os
from pathlib import Path

# the development greetings: ../shared beside the checkout (wherever it is cloned), or CALLGATE_DEV_GREETINGS
DEV_GREETINGS = Path(
    os.environ.get("CALLGATE_DEV_GREETINGS", Path(__file__).resolve().parents[4] / "shared" / "data" / "dev_greetings")
)


def dev_greetings_split(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Fixed split of the real dev greetings: (train-usable, held-out). Every other sorted file is held out."""
    files = sorted(files)
    return files[0::2], files[1::2]


def dev_greetings() -> tuple[list[Path], list[Path]]:
    """(training half, held-out half) of the greetings on this machine; none without the folder."""
    return dev_greetings_split(list(DEV_GREETINGS.glob("*.wav")) if DEV_GREETINGS.is_dir() else [])
