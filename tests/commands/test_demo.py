"""`callgate demo` is what `make demo` runs on a new machine: it must pass its own checks end to end.

The demo exits 1 when one of its checks fails (the message started before the beep ended, a clear on an
"uh-huh", a barge-in whose heard words differ from what the phone played). A broken demo once reached
main because nothing ran it; this test runs it as a user does, as a subprocess with the real server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(600)
def test_demo_runs_every_scenario_and_passes_its_own_checks(tmp_path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=540,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for row in ("voicemail + beep", "voicemail, no beep", "caller hangs up early", "a person answers",
                "three turns", "barge-in", "over the bot", "voicemail"):
        assert row in out, f"demo row {row!r} missing:\n{out[-4000:]}"
    assert "message_played" in out and "after beep end" in out
    assert "server stopped." in out
