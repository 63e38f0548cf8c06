"""`callgate replay --workflow agent --json` with the listening stack: a TV behind the caller is logged as
`background_speech` and never barges in; the caller's turns start and end through the endpointer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from callgate.audio import save_wav, to_int16
from callgate.cli import main
from callgate.settings import get_settings
from callgate.synth import concat, silence, speech, telephone_channel


def test_replay_agent_logs_background_speech_and_turn_events(tmp_path, capsys, monkeypatch):
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CARTESIA_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MESSAGE_CACHE_DIR", str(tmp_path / "cache"))
    line = speech("I need to change my appointment please.", voice="en-us+m3")
    caller = concat(silence(4.0), 0.9 * line / np.max(np.abs(line)), silence(9.0))
    tv_line = speech("And now the weather for the weekend. Scattered showers are expected tonight.", voice="en-gb+f3")
    tv_at = 9.0
    tv = concat(silence(tv_at), 0.12 * tv_line / np.max(np.abs(tv_line)))  # ~18 dB under the caller
    x = np.zeros(max(len(caller), len(tv)), np.float32)
    x[: len(caller)] += caller
    x[: len(tv)] += tv
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(x)))
    assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert "user_turn_start" in kinds and "turn_end" in kinds, kinds
    starts = [e for e in events if e["event"] == "user_turn_start"]
    assert all(e["t_ms"] < tv_at * 1000 - 300 for e in starts), starts  # the TV never starts a turn
    bg = [e for e in events if e["event"] == "background_speech"]
    assert bg and all(e["start_ms"] >= tv_at * 1000 - 300 for e in bg), bg
    assert not [e for e in events if e["event"] == "barge_in" and e["onset_ms"] >= tv_at * 1000 - 300]
    end = next(e for e in events if e["event"] == "turn_end" and not e["tentative"])
    assert end["source"] in ("smart_turn", "text", "smart_turn+text", "silence")


def test_replay_agent_two_stage_gate_pauses_the_bot_on_a_quiet_tv_and_resumes_it(tmp_path, capsys, monkeypatch):
    """The gate's two stages through the real agent workflow: a quiet TV line over the bot's greeting
    opens the gate tentatively (the bot pauses), is revoked (`background_ignored`: the bot resumes, no
    clear), and never barges in; the caller's own turn later still does. The preset here opens
    tentatively far under the threshold, so that the quiet TV line is sure to exercise both stages."""
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CARTESIA_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MESSAGE_CACHE_DIR", str(tmp_path / "cache"))
    doc = json.loads((Path(__file__).parents[2] / "pipelines" / "presets" / "listen.json").read_text())
    doc["workflows"]["agent"]["gate"].update(
        {"confirm_ms": 500.0, "tentative_db": 12.0, "confirm_windows": 3, "confirm_extra_db": 0.0})
    presets = tmp_path / "listen.json"
    presets.write_text(json.dumps(doc))
    monkeypatch.setenv("LISTEN_PRESETS_PATH", str(presets))
    line = speech("I need to change my appointment please.", voice="en-us+m3")
    caller_at, tv_at = 6.0, 1.5
    caller = concat(silence(caller_at), 0.9 * line / np.max(np.abs(line)), silence(6.0))
    tv_line = speech("And now the weather for the weekend.", voice="en-gb+f3")
    tv = concat(silence(tv_at), 0.02 * tv_line / np.max(np.abs(tv_line)))  # under the static fallback level
    x = np.zeros(max(len(caller), len(tv)), np.float32)
    x[: len(caller)] += caller
    x[: len(tv)] += tv
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(x)))
    get_settings.cache_clear()  # the settings (and so the presets path) are read once per process
    try:
        assert main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"]) == 0
    finally:
        get_settings.cache_clear()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tv_end = (tv_at + len(tv_line) / 8000) * 1000
    ignored = [e for e in events if e["event"] == "background_ignored"]
    assert ignored and all(tv_at * 1000 - 300 <= e["onset_ms"] <= tv_end for e in ignored), ignored
    assert [e for e in events if e["event"] == "background_speech" and e["start_ms"] <= tv_end]
    early = [e for e in events if e["event"] in ("barge_in", "user_turn_start") and e.get("onset_ms", e["t_ms"])
             < caller_at * 1000 - 300]
    assert not early, early  # the TV neither barged in nor started a turn
    assert [e for e in events if e["event"] == "user_turn_start" and e["t_ms"] >= caller_at * 1000 - 300]
