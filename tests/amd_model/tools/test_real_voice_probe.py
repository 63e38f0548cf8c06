"""real_voice_probe: cuts each recording after its onset, pads it with silence and reports what the
shipped model and preset call it (recorded prompts from the Asterisk sounds stand in for greetings)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from amd_model.runtime import AmdModel
from amd_model.tools.real_voice_probe import main, probe
from processors.amd_decision import load_presets

ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    if not ALLISON.is_dir():
        pytest.skip("asterisk-core-sounds-en-wav not installed (scripts/system_deps.sh)")
    for name in ("vm-intro.wav", "vm-theperson.wav"):
        shutil.copy(ALLISON / name, tmp_path / name)
    return tmp_path


def test_probe_counts_every_recording_and_times_machine_verdicts_from_onset(recordings: Path) -> None:
    rep = probe(recordings, AmdModel(), load_presets()["default"], cut_ms=700)
    assert rep["n"] == 2 and sum(rep["verdicts"].values()) == 2
    assert "no_speech" not in rep["verdicts"]  # the VAD hears both prompts
    if rep["verdicts"].get("machine"):
        assert 0 < rep["machine_p50_ms"] < 8000


def test_cli_prints_the_summary_and_refuses_a_missing_dir(
    recordings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(recordings), "--cut-ms", "500"]) == 0
    assert "first 500 ms of each real greeting, then silence (2 calls, preset 'default')" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
