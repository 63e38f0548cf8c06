"""agent tools and false-interruption recovery end to end: the simulator's scripted caller <-> the real
server over a real WebSocket, with the Deepgram, OpenAI and Cartesia stand-ins (the real Pipecat services).

The OpenAI stand-in is scripted to call the agent's tools; what is checked is what the Twilio stand-ins
received (the REST update, the media and marks the simulated phone played) and the server's record.
"""

from __future__ import annotations

from callgate.audio import save_wav, to_int16
from pipelines.services.chat_server import Reply, ToolCall
from processors.bot_speech import mark_word
from simulator.script import parse_script
from tests.server.conftest import wait_until
from tests.server.test_agent_e2e import AGENT, scripted_agent_call
from tests.server.test_agent_e2e import vendors as vendors  # noqa: F401 - the stand-ins fixture

REP = "+12025550123"


async def record_of(server, report):
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    return server.state.finished[sid]


def story(report, record=None) -> str:
    """The simulated phone's side of the call and the server's record, compactly (for failure messages)."""
    s = report.summary
    server = "" if record is None else (
        f"\nserver: outcome {record.outcome}, counters {record.counters}; events: "
        + ", ".join(f"{e['event']}@{e.get('t_ms')}" for e in record.events)
    )
    evs = ", ".join(
        f"{e['event']}@{e['t_ms']}" + (f"({e.get('name') or e.get('text') or e.get('played_text') or ''})")
        for e in report.events if e["event"] not in ("media_start", "media_end")
    )
    return f"ended by {s['ended_by']} at {s['t_ms']} ms, updates {s['updates']}; events: {evs}{server}"


def word_of(mark_name: str) -> str:
    """The word an agent word mark is named after ("a:w2.0.3:connect" -> "connect")."""
    return mark_name.rpartition(":")[2]


def actions(record, name: str) -> list[dict]:
    return [e for e in record.events if e["event"] == name]


async def test_transfer_to_human_hands_the_call_to_the_dial_after_the_caller_heard_the_handover_line(
    server_factory, tmp_path, vendors
):
    dg, oa, _ = vendors
    ask = "Can I talk to a real person please?"
    handover = "Of course, let me connect you with a person."
    dg.say(ask)
    oa.script(Reply(text=handover, tool_calls=[ToolCall("transfer_to_human", {})]))
    script = parse_script({"voice": "en-us+m3", "tail_ms": 3000, "step": [{"say": ask, "gap_ms": 500}]})
    server, report = await scripted_agent_call(server_factory, tmp_path, vendors, script, connect_number=REP)
    assert report.ok, report.summary
    record = await record_of(server, report)

    # The Twilio REST stand-in got the hand-off: new TwiML that dials the rep; Twilio then ended the stream.
    updates = report.summary["updates"]
    assert len(updates) == 1 and report.summary["ended_by"] == "update", story(report, record)
    assert "<Dial>" in updates[0]["twiml"] and f"<Number>{REP}</Number>" in updates[0]["twiml"], updates
    # ... once the handover line had played: every one of its word marks echoed as played, nothing left unplayed
    update = report.of("update")[0]
    assert update["unplayed_ms"] == 0, update
    heard = [m["name"] for m in report.summary["marks"] if m["name"].startswith("a:w2.") and m["played"]]
    assert [word_of(n) for n in heard] == [mark_word(w) for w in handover.split()], story(report, record)

    assert record.outcome == "connect", record.outcome
    assert [e["tool"] for e in actions(record, "tool_call")] == ["transfer_to_human"]
    assert actions(record, "connect") and actions(record, "connect")[0]["ok"] is True
    assert [t["text"] for t in record.transcript if t["role"] == "caller"] == [ask]
    assert record.transcript[-1]["role"] == "bot" and record.transcript[-1]["heard"] == handover
    assert oa.requests[-1]["messages"][-1] == {"role": "user", "content": ask}


async def test_leave_voicemail_plays_the_message_and_hangs_up_once_it_has_played(server_factory, tmp_path, vendors):
    """No AMD (an inbound leg): the LLM hears a machine's greeting and calls leave_voicemail; the message
    is played in full, and the call is hung up once its mark is echoed as played."""
    from callgate.synth import speech, telephone_channel

    dg, oa, _ = vendors
    greeting = "Please leave a message after the tone."
    dg.say(greeting)
    # (every request gets the tool call: a reply retracted because the line went on is asked again)
    oa.script(*[Reply(text="", tool_calls=[ToolCall("leave_voicemail", {})]) for _ in range(3)])
    (tmp_path / "messages").mkdir(exist_ok=True)
    message = to_int16(telephone_channel(speech("This is the clinic. Please call us back.")))
    save_wav(tmp_path / "messages" / "short.wav", message)
    message_ms = len(message) / 8
    script = parse_script({"voice": "en-us+f2", "tail_ms": 15000, "step": [{"say": greeting, "gap_ms": 300}]})
    server, report = await scripted_agent_call(
        server_factory, tmp_path, vendors, script, params={"message": "short.wav"}
    )
    assert report.ok, report.summary
    record = await record_of(server, report)

    marks = [m for m in report.summary["marks"] if m["name"] == "voicemail_message_end"]
    assert len(marks) == 1 and marks[0]["played"], story(report, record)
    hangups = report.of("hangup")
    assert hangups and hangups[0]["t_ms"] >= marks[0]["t_ms"], (hangups, marks)  # not before the message ended
    assert report.summary["ended_by"] == "hangup" and hangups[0]["unplayed_ms"] == 0
    assert record.outcome == "message_played", record.outcome
    assert [e["tool"] for e in actions(record, "tool_call")] == ["leave_voicemail"]
    play = actions(record, "play_message")
    assert len(play) == 1 and play[0]["trigger"] == "agent" and play[0]["message"] == "short.wav", play
    # the phone played the message out in full: its end mark echoed no sooner than the message's length
    assert marks[0]["t_ms"] - play[0]["t_ms"] >= message_ms - 40, (marks, play, message_ms)
    assert [t["text"] for t in record.transcript if t["role"] == "caller"] == [greeting]


async def test_a_false_interruption_after_a_clear_resumes_from_the_first_word_the_caller_did_not_hear(
    server_factory, tmp_path, vendors
):
    """A wordless sound over the bot long enough to be taken for a barge-in: `clear` goes out. Its
    transcript then comes back empty and it ends short: a false interruption. The bot says again what
    the caller did not hear, from the first unheard word; the phone plays those words after the clear."""
    dg, oa, _ = vendors
    assert AGENT  # the tester agent file (its first message is the turn that gets interrupted)
    dg.say("")  # what the STT makes of the sound: no words
    script = parse_script(
        {
            "tail_ms": 6000,
            "step": [{"say": "mmmmmmmmmm", "kind": "noise", "transcript": "", "voice": "en-us+m3",
                      "after": "bot_audio", "at_ms": 1000}],
        }
    )
    server, report = await scripted_agent_call(
        server_factory, tmp_path, vendors, script, barge_in_min_ms=400, backchannel_max_ms=1500
    )
    assert report.ok, report.summary
    record = await record_of(server, report)
    clears = report.of("clear")
    assert len(clears) == 1, story(report, record)
    before = clears[0]["played_words"]
    kinds = [e["event"] for e in record.events]
    assert "barge_in" in kinds and "false_interruption_resumed" in kinds, kinds

    # What the phone played: the words heard before the clear, then (marks sent after the clear, played)
    # the rest of the greeting from the first word it had not played.
    greeting = "Hi, this is the test agent. How can I help?"
    words = [mark_word(w) for w in greeting.split()]
    clear_t = clears[0]["t_ms"]
    after = [m for m in report.summary["marks"] if m["name"].startswith("a:w1.") and m["queued_t_ms"] >= clear_t]
    assert after and all(m["played"] for m in after), after
    resumed = [word_of(m["name"]) for m in after]
    assert before + resumed == words, (before, resumed)
    assert before and resumed  # it really was cut, and really resumed

    # and the record says the caller heard the whole greeting, in one piece
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert bots and bots[0]["heard"] == greeting and not bots[0]["interrupted"], bots
