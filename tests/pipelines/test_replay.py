"""`callgate replay`: the server's pipeline on files, offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from callgate.audio import pcm_to_ulaw, save_wav, to_int16
from callgate.cli import main
from callgate.synth import make_voicemail_greeting

DEV_GREETINGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "dev_greetings"


def replay_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["replay", *args, "--json"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    for e in events:
        assert isinstance(e["event"], str) and isinstance(e["t_ms"], int), e
    assert events[-1]["event"] == "summary"
    return events


def test_replay_greeting_with_beep_plays_message_after_beep(tmp_path, capsys):
    g = make_voicemail_greeting("Hi, this is Alex, leave a message after the beep.", beep_hz=700, beep_secs=0.415)
    wav = save_wav(tmp_path / "vm.wav", to_int16(g.audio))
    events = replay_json(capsys, str(wav))
    kinds = [e["event"] for e in events]
    for name in ("speech_start", "speech_end", "beep", "beep_end", "play_message", "mark", "hangup", "summary"):
        assert name in kinds, kinds
    ev = {e["event"]: e for e in events}
    assert abs(ev["beep"]["onset_ms"] - g.beep_onset_ms) <= 60 and abs(ev["beep"]["hz"] - 700) < 10
    assert ev["play_message"]["t_ms"] >= ev["beep_end"]["t_ms"] >= g.beep_offset_ms - 60
    assert ev["mark"]["played"] is True and ev["hangup"]["t_ms"] >= ev["mark"]["t_ms"]
    assert kinds.index("hangup") > kinds.index("mark") > kinds.index("play_message") > kinds.index("beep_end")


def test_replay_accepts_raw_ulaw_with_the_same_result(tmp_path, capsys):
    g = make_voicemail_greeting("You have reached the office of Doctor Chen.", beep_hz=1200, beep_secs=0.3)
    pcm = to_int16(g.audio)
    save_wav(tmp_path / "a.wav", pcm)
    (tmp_path / "a.ulaw").write_bytes(pcm_to_ulaw(pcm.tobytes()))
    a = replay_json(capsys, str(tmp_path / "a.wav"))
    b = replay_json(capsys, str(tmp_path / "a.ulaw"))
    beeps_a = [e["t_ms"] for e in a if e["event"] == "beep"]
    beeps_b = [e["t_ms"] for e in b if e["event"] == "beep"]
    assert beeps_a and abs(beeps_a[0] - beeps_b[0]) <= 20


def test_replay_rejects_bad_input_with_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    assert main(["replay", str(bad)]) == 2
    assert "not a WAV" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.wav")]) == 2
    assert main(["replay", str(bad), "--workflow", "nope"]) == 2


@pytest.mark.skipif(not DEV_GREETINGS.is_dir(), reason="../shared/data/dev_greetings not beside the repo")
def test_replay_every_dev_greeting_prints_valid_json_and_no_false_beeps(capsys):
    files = sorted(DEV_GREETINGS.glob("*.wav"))
    assert len(files) >= 30
    false_beeps = {}
    for f in files:
        events = replay_json(capsys, str(f), "--tail", "3")
        beeps = [e for e in events if e["event"] == "beep"]
        if beeps:
            false_beeps[f.name] = beeps
    print(f"replayed {len(files)} dev greetings; files with a (false) beep: {len(false_beeps)}")
    assert not false_beeps, false_beeps


def test_silence_only_call_hits_the_safety_timeout(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CALL_TIMEOUT_SECS", "5")
    from callgate.settings import get_settings

    get_settings.cache_clear()
    try:
        wav = save_wav(tmp_path / "silence.wav", np.zeros(8000 * 2, np.int16))
        events = replay_json(capsys, str(wav), "--tail", "10")
    finally:
        get_settings.cache_clear()
    hangup = [e for e in events if e["event"] == "hangup"]
    assert hangup and hangup[0]["reason"] == "timeout" and 5000 <= hangup[0]["t_ms"] <= 5100
