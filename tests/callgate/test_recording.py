"""CallRecording turns a call's public events into its row, events and (agent) transcript in the store."""

from __future__ import annotations

from callgate.metrics import Metrics
from callgate.recording import CallRecording
from callgate.store import CallStore


async def test_voicemail_events_fill_the_call_row_and_metrics(tmp_path):
    store = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await store.start()
    metrics = Metrics()
    seen = []
    rec = CallRecording(store, metrics, "CA1", "voicemail_drop", on_event=seen.append)
    rec.started(agent=None)
    for ev in [
        {"event": "speech_start", "t_ms": 300},
        {"event": "amd", "t_ms": 2100, "label": "machine", "confidence": 0.93, "detector": "machine_fast"},
        {"event": "beep", "t_ms": 4000, "onset_ms": 3900, "hz": 1000.0},
        {"event": "beep_end", "t_ms": 4400, "hz": 1000.0, "duration_ms": 500},
        {"event": "play_message", "t_ms": 4420, "trigger": "beep"},
        {"event": "mark", "t_ms": 9000, "name": "voicemail_message_end", "played": True},
        {"event": "hangup", "t_ms": 9020, "reason": "message_played"},
    ]:
        rec.event(ev)
    rec.ended("message_played", {"media_frames": 450, "audio_ms": 9020})
    assert await store.flush()
    call = await store.get_call("CA1")
    await store.close()
    assert len(seen) == 7 and [e["event"] for e in call["events"]][-1] == "hangup"
    assert (call["amd_label"], call["amd_detector"], call["amd_latency_ms"]) == ("machine", "machine_fast", 2100)
    assert call["beep"] and call["beep_onset_ms"] == 3900 and call["message_started_ms"] == 4420
    assert call["marks_played"] == 1 and call["outcome"] == "message_played" and call["event_count"] == 7
    reg = metrics.registry
    assert reg.get_sample_value("callgate_beep_to_message_seconds_count") == 1
    assert reg.get_sample_value("callgate_beep_to_message_seconds_sum") == 0.02
    assert reg.get_sample_value("callgate_calls_total", {"workflow": "voicemail_drop", "outcome": "message_played"}) == 1
    assert reg.get_sample_value("callgate_active_calls") == 0


async def test_agent_conversation_events_become_transcript_rows_with_latency(tmp_path):
    store = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await store.start()
    rec = CallRecording(store, None, "CA2", "agent")
    rec.started(agent="example")
    for ev in [
        {"event": "user_transcript", "t_ms": 1500, "text": "Hello?", "final": True, "start_ms": 400, "end_ms": 900},
        {"event": "bot_turn_start", "t_ms": 1600, "turn": 1, "text": "Hi, this is Ana from Acme. Is now a good time?"},
        {"event": "bot_turn_end", "t_ms": 4800, "turn": 1, "heard": "Hi, this is Ana from Acme.", "interrupted": True},
        {"event": "latency", "t_ms": 4800, "turn": 1, "first_audio_sent_ms": 610.0, "first_audio_played_ms": 655.0},
        {"event": "user_transcript", "t_ms": 6000, "text": "Not really.", "final": True, "start_ms": 4300, "end_ms": 5200},
        {"event": "bot_turn_start", "t_ms": 6100, "turn": 2, "text": "Sorry to bother you. Goodbye."},
        {"event": "bot_turn_end", "t_ms": 8000, "turn": 2, "heard": "Sorry to bother you. Goodbye.", "interrupted": False},
    ]:
        rec.event(ev)
    rec.ended("end_call", {"audio_ms": 8000})  # the last turn's latency never came: its row is written anyway
    assert await store.flush()
    call = await store.get_call("CA2")
    await store.close()
    rows = [(t["turn"], t["role"], t["text"]) for t in call["transcript"]]
    assert rows == [(1, "caller", "Hello?"), (1, "bot", "Hi, this is Ana from Acme. Is now a good time?"),
                    (2, "caller", "Not really."), (2, "bot", "Sorry to bother you. Goodbye.")]
    first_bot = call["transcript"][1]
    assert first_bot["latency_ms"] == 655.0 and first_bot["interrupted"] is True
    assert first_bot["heard"] == "Hi, this is Ana from Acme."
    assert call["transcript"][3]["latency_ms"] is None and call["agent_turns"] == 2 and call["agent"] == "example"
