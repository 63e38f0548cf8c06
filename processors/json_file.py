"""Read a JSON settings file (presets) with errors that name the file and the problem, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str) -> Any:
    """The parsed document at `path`; `what` names it in errors ("AMD presets file").

    FileNotFoundError when it is missing, ValueError when it is a folder or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} not found: {path}") from e
    except IsADirectoryError as e:
        raise ValueError(f"{what} is a folder, not a JSON file: {path}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text)") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
