"""Validation of the names a request may choose for a call (message, agent), before anything is placed.

A name is a plain file name (no path, no leading dot, no control characters) of a file that exists in
its folder, so `message=../../etc/passwd` is refused by the webhook and POST /calls, not by a live call.
"""

from __future__ import annotations

import re
from pathlib import Path

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class OptionError(ValueError):
    """A call option that cannot be used (the message is safe to return to the caller)."""


def check_asset_name(kind: str, name: str, folder: Path, *, any_suffix: bool = False) -> str:
    """`name` if it names a file in `folder` (`any_suffix`: also `name.<ext>`); else OptionError."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise OptionError(f"{kind} must be a plain file name (letters, digits, '._-')")
    base = folder.expanduser()
    if (base / name).is_file():
        return name
    if any_suffix and base.is_dir() and any(p.is_file() for p in base.glob(f"{glob_escape(name)}.*")):
        return name
    raise OptionError(f"{kind} {name!r} is not a file in the {kind}s folder")


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", name)
