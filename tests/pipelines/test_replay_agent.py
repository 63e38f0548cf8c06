"""`callgate replay --workflow agent --json` offline: no keys (pocketsphinx, the scripted dialog, the
offline voice), the conversation's events, and a barge-in over the bot's greeting."""

from __future__ import annotations

import json

from callgate.audio import save_wav, to_int16
from callgate.cli import main
from callgate.synth import concat, silence, speech, telephone_channel


def test_replay_agent_offline_prints_conversation_events(tmp_path, capsys, monkeypatch):
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CARTESIA_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MESSAGE_CACHE_DIR", str(tmp_path / "cache"))
    # The agent greets first (inbound, amd off); the caller cuts in 2 s into the greeting, then waits.
    caller = concat(silence(2.0), speech("Stop, stop, I need to change my appointment please.", voice="en-us+m3"))
    wav = save_wav(tmp_path / "call.wav", to_int16(telephone_channel(concat(caller, silence(7.0)))))
    rc = main(["replay", str(wav), "--workflow", "agent", "--amd", "off", "--json", "--tail", "0"])
    assert rc == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    for name in ("conversation_start", "bot_turn_start", "barge_in", "interruption", "user_transcript", "bot_turn_end"):
        assert name in kinds, kinds
    inter = next(e for e in events if e["event"] == "interruption")
    summary = events[-1]
    assert summary["event"] == "summary"
    first_bot = next(t for t in summary["transcript"] if t["role"] == "bot")
    # the context holds only what was heard: a strict prefix of the greeting's words
    heard, said = inter["heard_text"].split(), first_bot["text"].split()
    assert heard and heard == said[: len(heard)] and len(heard) < len(said) and inter["dropped_ms"] > 0
    assert first_bot["interrupted"] and first_bot["heard"] == inter["heard_text"]
    assert any(t["role"] == "caller" for t in summary["transcript"])
