"""agent end to end: the simulator's scripted caller <-> the real server over a real WebSocket, with the
Deepgram, OpenAI and Cartesia stand-ins speaking their real wire protocols (the real Pipecat services)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from pipelines.services.chat_server import Reply
from processors.bot_speech import mark_word
from simulator.phone import call_agent, simulate_call
from simulator.rest import RestStandIn
from simulator.script import parse_script
from simulator.vendors import CartesiaStandIn, DeepgramStandIn, OpenAIStandIn, vendor_settings
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN, wait_until

AGENT = """name = "tester"
system_prompt = "You are a test agent."
first_message = "Hi, this is the test agent. How can I help?"
end_call_phrases = ["goodbye"]
max_call_secs = 120
"""


def agent_vendors(
    tmp_path, deepgram: dict[str, Any] | None = None, cartesia: dict[str, Any] | None = None, **openai: Any
) -> Iterator[tuple[DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    """The `tester` agent file and the three stand-ins at these tests' latencies (`deepgram`, `cartesia`:
    other stand-in arguments; `openai`: more arguments for the OpenAI stand-in, e.g. its scripted
    `default` reply)."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "tester.toml").write_text(AGENT)
    dg_args = deepgram or {"final_ms": 150, "interim_every_ms": 200, "endpoint_ms": 300}
    dg = DeepgramStandIn(transcriber=None, **dg_args).start()
    oa = OpenAIStandIn(first_token_ms=100, **openai).start()
    ct = CartesiaStandIn(**{"first_audio_ms": 80, "realtime_factor": 4.0, **(cartesia or {})}).start()
    try:
        yield dg, oa, ct
    finally:
        for v in (dg, oa, ct):
            v.stop()


@pytest.fixture
def vendors(tmp_path) -> Iterator[tuple[DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    yield from agent_vendors(tmp_path)


def agent_server(server_factory, tmp_path, rest, vendors, **overrides):
    return server_factory(
        twilio_api_base_url=rest.base_url, agents_dir=tmp_path / "agents", **vendor_settings(*vendors), **overrides
    )


async def finished_record(server, report):
    """The server's record of the call the simulator just made (it closes just after the socket)."""
    assert report.ok, report.summary
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    return server.state.finished[sid]


async def scripted_agent_call(
    server_factory, tmp_path, vendors, script, network_delay_ms: float = 0.0, params: dict | None = None, **overrides
):
    """One scripted caller into the agent (AMD off) on a fresh server with settings `overrides`; `params`:
    more webhook parameters. Returns (server, report)."""
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = agent_server(server_factory, tmp_path, rest, vendors, **overrides)
        report = await call_agent(
            server.base_url, script, agent="tester", rest=rest, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
            network_delay_ms=network_delay_ms, **(params or {}),
        )
    return server, report


async def test_three_turn_conversation_with_marks_and_transcript(server_factory, tmp_path, vendors):
    dg, oa, _ = vendors
    lines = ["I would like to move my appointment.", "Friday would be good.", "Morning please."]
    dg.say(*lines)
    oa.script(
        Reply(text="Sure, I can do that. Which day works for you?"),
        Reply(text="Friday it is. Morning or afternoon?"),
        Reply(text="Done, see you Friday morning."),
    )
    script = parse_script(
        {"voice": "en-us+m3", "tail_ms": 1500, "step": [{"say": line, "gap_ms": 500} for line in lines]}
    )
    server, report = await scripted_agent_call(server_factory, tmp_path, vendors, script)
    assert report.ok, report.summary
    assert [ev["text"] for ev in report.of("caller_line")] == lines  # all three turns were said
    # every bot clause is followed by a mark, and every one of them echoed as played
    clause_marks = [m for m in report.summary["marks"] if m["name"].startswith("a:c")]
    assert len(clause_marks) >= 4 and all(m["played"] for m in clause_marks), clause_marks
    assert not report.of("clear")

    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{server.base_url}/calls/{sid}", headers=AUTH)
        assert r.status_code == 200, r.text
        record = r.json()
    transcript = record["transcript"]
    roles = [t["role"] for t in transcript]
    assert roles == ["bot", "caller", "bot", "caller", "bot", "caller", "bot"], transcript
    assert [t["text"] for t in transcript if t["role"] == "caller"] == lines
    bots = [t for t in transcript if t["role"] == "bot"]
    assert bots[0]["heard"] == "Hi, this is the test agent. How can I help?"
    assert bots[1]["heard"] == "Sure, I can do that. Which day works for you?"
    assert all(not b["interrupted"] for b in bots)
    starts = [t["start_ms"] for t in transcript]
    assert starts == sorted(starts)  # in order, on the call's audio clock
    assert len(record["latency"]) == 3
    for turn in record["latency"]:
        assert turn["first_audio_played_ms"] is not None and turn["first_audio_played_ms"] < 2500, turn
        assert turn["llm_first_token_ms"] >= 90  # the stand-in's 100 ms, measured


async def test_barge_in_backchannel_and_noise_over_a_wan(server_factory, tmp_path, vendors):
    """150 ms each way: a barge-in clears at once and the context keeps exactly the words played; an
    "uh-huh" and a throat clear over the next reply pause it without a clear, and it completes."""
    dg, oa, _ = vendors
    reply = "Of course, ask me anything you like, I am happy to help with your question today."
    oa.script(Reply(text=reply))
    dg.say("Sorry, wait, I have a question.", "uh-huh", "")
    script = parse_script(
        {
            "tail_ms": 1500,
            "step": [
                {"say": "Sorry, wait, I have a question.", "voice": "en-us+f2", "after": "bot_audio", "at_ms": 1400},
                {"say": "uh-huh", "kind": "backchannel", "voice": "en-gb+m1", "after": "bot_audio", "at_ms": 1000},
                {"say": "ahem", "kind": "noise", "transcript": "", "after": "bot_audio", "at_ms": 1200},
            ],
        }
    )
    server, report = await scripted_agent_call(server_factory, tmp_path, vendors, script, network_delay_ms=150)
    assert report.ok, report.summary
    clears = report.of("clear")
    assert len(clears) == 1, clears  # the barge-in only: no clear for the backchannel or the noise
    lines = report.of("caller_line")
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    record = server.state.finished[sid]
    events = record.events
    barge = next(e for e in events if e["event"] == "barge_in")
    assert barge["t_ms"] - lines[0]["start_ms"] <= 600  # server audio time, speech start -> clear
    inter = next(e for e in events if e["event"] == "interruption")
    # the words the simulator really played before the clear come from the word marks' names
    assert [mark_word(w) for w in inter["heard_text"].split()] == clears[0]["played_words"]
    assert clears[0]["played_words"]
    kinds = [e["event"] for e in events]
    assert "backchannel" in kinds and "noise_ignored" in kinds, kinds
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert bots[0]["interrupted"] and bots[0]["heard"] == inter["heard_text"]
    assert not bots[1]["interrupted"] and bots[1]["heard"] == reply  # the reply completed, paused twice
    # the LLM saw exactly what the caller heard of the greeting
    request = oa.requests[-1]
    assistant = [m for m in request["messages"] if m["role"] == "assistant"]
    assert assistant and assistant[0]["content"] == inter["heard_text"]


async def test_outbound_machine_gets_the_voicemail_message_after_the_beep(server_factory, tmp_path, vendors):
    """AMD first: a machine hears the voicemail message after the beep (voicemail_drop's own logic), and
    the call is hung up once the message's mark is echoed as played; the agent never speaks."""
    from callgate.audio import save_wav, to_int16
    from callgate.synth import make_voicemail_greeting, speech, telephone_channel

    greeting = make_voicemail_greeting("Hi, you have reached Sam. Leave a message after the tone.", beep_hz=850)
    (tmp_path / "messages").mkdir(exist_ok=True)
    save_wav(tmp_path / "messages" / "short.wav", to_int16(telephone_channel(speech("Please call us back."))))
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = agent_server(server_factory, tmp_path, rest, vendors)
        report = await simulate_call(
            to_int16(greeting.audio),
            f"{server.base_url}/twiml",
            auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            params={"workflow": "agent", "agent": "tester", "message": "short.wav"},
            rest=rest,
            tail_secs=15,
        )
    assert report.ok, report.summary
    marks = report.of("mark")
    assert report.of("media_start")[0]["t_ms"] >= greeting.beep_offset_ms
    assert [m["name"] for m in marks] == ["voicemail_message_end"] and marks[0]["played"]
    assert report.of("hangup") and report.of("hangup")[0]["t_ms"] >= marks[0]["t_ms"]
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    record = server.state.finished[sid]
    assert record.outcome == "message_played" and record.transcript == []


async def test_a_line_said_into_a_pause_of_the_greeting_is_heard_once_as_the_callers_turn(
    server_factory, tmp_path, vendors
):
    """A slow TTS leaves pauses between the greeting's clauses; the caller answers into one. Judged on
    its first interim ("yes") it looks like a backchannel and the bot resumes, but its final ("yes I can
    talk now", later than the verdict) takes the floor: it becomes the caller's turn at once. It must
    never be left over for the caller's next turn (which then answered the line before it, and a call
    whose caller waits for the bot while the bot waits for the caller ran into the safety timeout with
    no caller transcript at all: the quarantined test_a_failing_call_leaves_the_call_beside_it_alone)."""
    dg, oa, ct = vendors
    ct.first_audio_ms = 900  # each clause of the greeting starts 0.9 s after the one before ends
    dg.interim_every_ms, dg.final_ms = 1000.0, 900.0  # one interim word before the speech ends; a late final
    lines = ["yes I can talk now", "tomorrow morning please"]
    dg.say(*lines)
    oa.script(Reply(text="Great. Which day?"), Reply(text="Done, see you then."))
    script = parse_script(
        {"voice": "flite:kal", "tail_ms": 3000, "step": [{"say": line, "gap_ms": 600} for line in lines]}
    )
    # (a barge-in needs 2 s of speech without floor-taking words here: the line is judged on its words)
    server, report = await scripted_agent_call(server_factory, tmp_path, vendors, script, barge_in_min_ms=2000)
    assert report.ok, report.summary
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    record = server.state.finished[sid]
    said = [t["text"] for t in record.transcript if t["role"] == "caller"]
    kinds = [(e["event"], e.get("text")) for e in record.events if e["event"] in ("backchannel", "late_turn", "barge_in")]
    assert said == lines, f"caller turns {said} for lines {lines}; decisions over the bot: {kinds}"
    # each line was answered by its own reply: the LLM saw the lines one by one, in order
    users = [[m["content"] for m in r["messages"] if m["role"] == "user"] for r in oa.requests]
    assert users == [lines[:1], lines], users


async def test_a_slow_greeting_does_not_start_over_a_caller_who_talks_first(server_factory, tmp_path):
    """Cartesia's first audio takes 1.5 s; the caller starts talking at 0.3 s and goes on for ~3 s. The
    greeting must not play over them: it pauses at its first frame and yields (nothing of it heard), and
    the caller's words are answered, with the greeting kept in the context as unheard."""
    line = "Hello, I am calling because I need to change my appointment on Friday morning please."
    with contextmanager(agent_vendors)(tmp_path, cartesia={"first_audio_ms": 1500}) as (dg, oa, ct):
        dg.say(line)
        oa.script(Reply(text="Sure, which day would suit you better?"))
        script = parse_script({"voice": "en-us+m3", "tail_ms": 3000,
                               "step": [{"say": line, "after": "start", "at_ms": 300}]})
        server, report = await scripted_agent_call(server_factory, tmp_path, (dg, oa, ct), script)
    said, record = report.of("caller_line")[0], await finished_record(server, report)
    events = record.events
    first_audio = next(e for e in events if e["event"] == "bot_turn_start")
    assert said["start_ms"] < first_audio["t_ms"] < said["end_ms"]  # the greeting came while they talked
    barge = next(e for e in events if e["event"] == "barge_in")
    assert barge["t_ms"] - first_audio["t_ms"] <= 400  # it yielded at once
    clears = report.of("clear")
    assert clears and clears[0]["played_words"] == []  # the phone played none of its words
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert bots[0]["interrupted"] and bots[0]["heard"] == ""
    assert len(bots) >= 2 and not bots[1]["interrupted"]  # the caller was answered
    # ... by an LLM that was not told it had greeted them (they never heard it)
    assert oa.requests and not [m for m in oa.requests[-1]["messages"] if m["role"] == "assistant"]


async def test_a_hello_said_as_the_greeting_starts_is_answered_by_the_greeting(server_factory, tmp_path):
    """Both sides open at once: the caller's "Hello?" meets the greeting's first audio. The greeting pauses
    for it and goes on, no `clear`; the "Hello?" is not a turn of its own (the greeting answers it)."""
    with contextmanager(agent_vendors)(tmp_path, cartesia={"first_audio_ms": 600}) as (dg, oa, ct):
        dg.say("Hello?")
        script = parse_script({"voice": "en-us+f2", "tail_ms": 3000,
                               "step": [{"say": "Hello?", "after": "start", "at_ms": 800}]})
        server, report = await scripted_agent_call(server_factory, tmp_path, (dg, oa, ct), script)
    said, record = report.of("caller_line")[0], await finished_record(server, report)
    first_audio = next(e for e in record.events if e["event"] == "bot_turn_start")
    assert said["start_ms"] - 300 <= first_audio["t_ms"] <= said["end_ms"], (said, first_audio)  # they met
    assert not report.of("clear")
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert not bots[0]["interrupted"] and bots[0]["heard"] == bots[0]["text"]
    assert not [t for t in record.transcript if t["role"] == "caller"] and not oa.requests
