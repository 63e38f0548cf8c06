"""Preset files: a missing or broken JSON file is a clear error naming the file, for AMD and listening alike."""

from __future__ import annotations

import pytest

from processors.amd_decision import load_presets
from processors.endpointer import load_listen_preset
from processors.json_file import read_json


def test_read_json_names_the_missing_file_and_the_broken_one(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"AMD presets file not found: .*nope\.json"):
        read_json(tmp_path / "nope.json", "AMD presets file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json(bad, "listen presets file")
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good, "x") == {"a": [1, 2]}


def test_both_preset_loaders_use_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="AMD presets file not found"):
        load_presets(tmp_path / "amd.json")
    with pytest.raises(FileNotFoundError, match="listen presets file not found"):
        load_listen_preset("agent", tmp_path / "listen.json")


def test_read_json_on_a_folder_or_a_binary_file_says_so_without_a_traceback(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"AMD presets file is a folder, not a JSON file: "):
        read_json(tmp_path, "AMD presets file")
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF\x80\x81\xfe\xff")
    with pytest.raises(ValueError, match=r"a\.wav: not valid JSON \(not UTF-8 text\)"):
        read_json(wav, "listen presets file")
