"""scripts/load.py runs end to end at a tiny N (the real figures come from running it on a quiet machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_load_script_drives_real_calls_and_reports_each_step(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "load.py"), "--workflow", "voicemail_drop", "--calls", "2", "--workers", "1", "--clients", "1",
         "--ramp", "0.5", "--json", "--max-secs", "120", "--message-secs", "0", "--metrics-out", str(tmp_path / "scrape.txt")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1, r.stdout
    row = rows[0]
    assert row["calls"] == 2 and row["completed"] == 2 and row["failed"] == 0, row
    assert 0 <= row["reaction_p99_ms"] < 1000 and row["loop_lag_p99_ms"] is not None
    assert row["server_cpu_s_per_call"] > 0 and row["server_rss_mb"] > 50
    scrape = (tmp_path / "scrape-2.txt").read_text()  # taken while the calls were live
    assert "callgate_active_calls 2.0" in scrape and "callgate_event_loop_lag_seconds_bucket" in scrape
