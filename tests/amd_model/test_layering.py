"""Serving code never imports the AMD tools (corpus, training, tuning, evaluation, baseline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_serving_the_server_imports_no_amd_tools():
    code = (
        "import sys, server, pipelines.factory, processors.amd;"
        "print(sorted(m for m in sys.modules if m.startswith('amd_model')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert loaded and not [m for m in loaded if m.startswith("amd_model.tools")], loaded
