"""Greedy replies end to end: the simulator's scripted caller pauses mid-turn; the real server's agent asks
the LLM on the endpointer's tentative turn end, holds the reply, and scraps it when the caller goes on.
The simulator's received audio and marks show that no scrapped reply ever reached Twilio, and the
conversation goes on with the whole turn's words (Deepgram, OpenAI and Cartesia stand-ins on real sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from callgate.audio import save_wav
from pipelines.services.chat_server import Reply, last_user_text
from simulator.script import Step, parse_script, render
from simulator.vendors import CartesiaStandIn, DeepgramStandIn, OpenAIStandIn
from tests.server.conftest import wait_until
from tests.server.test_agent_e2e import agent_vendors, scripted_agent_call

VOICE = "en-us+m3"
FIRST, REST = "I would like to book a table.", "For four people tomorrow evening."
THEN = "Seven would be great."
PAUSE_MS = 900
SCRAPPED = "Sure, for how many people?"
ANSWERS = {  # what the LLM stand-in says to each caller turn (by its last user message)
    FIRST: SCRAPPED,
    f"{FIRST} {REST}": "A table for four tomorrow evening. What time?",
    THEN: "Seven it is. See you then.",
}


def answer(request) -> Reply:
    return Reply(text=ANSWERS.get(last_user_text(request), "Sorry, could you say that again?"))


@pytest.fixture
def vendors(tmp_path) -> Iterator[tuple[DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    yield from agent_vendors(tmp_path, default=answer)


def paused_turn_wav(path, first: str, rest: str, pause_ms: float):
    """One caller turn said with a pause inside it: `first`, `pause_ms` of silence, `rest`."""
    a = render(Step(say=first, voice=VOICE))
    b = render(Step(say=rest, voice=VOICE))
    gap = np.zeros(int(pause_ms * 8) // 160 * 160, np.int16)
    return save_wav(path, np.concatenate([a, gap, b]))


def greedy_preset(tmp_path):
    """The shipped agent preset with a wider greedy window: a turn that sounds complete gets its tentative
    end as soon as its words are in, but the final end waits for 1.6 s of silence unless the models are
    all but certain, so a 900 ms pause always lands between the two (the shipped preset decides many
    such pauses one way or the other within a few hundred ms, which would make the test a coin toss)."""
    doc = json.loads(open("pipelines/presets/listen.json").read())
    ep = doc["workflows"]["agent"]["endpointer"]
    ep.update(tentative_p=0.2, p_high=0.999, p_low=0.0, final_min_ms=1600.0, backstop_default_ms=1600.0,
              backstop_min_ms=1600.0, backstop_max_ms=1600.0, incomplete_ms=1600.0)  # fmt: skip
    path = tmp_path / "listen.json"
    path.write_text(json.dumps(doc))
    return path


async def test_a_paused_turn_scraps_its_greedy_reply_unheard_and_the_whole_turn_is_answered(
    server_factory, tmp_path, vendors
):
    dg, oa, ct = vendors
    dg.say(FIRST, REST, THEN)
    wav = paused_turn_wav(tmp_path / "paused.wav", FIRST, REST, PAUSE_MS)
    script = parse_script(
        {
            "voice": VOICE,
            "tail_ms": 2500,
            "step": [
                {"wav": str(wav), "transcript": f"{FIRST} {REST}", "gap_ms": 500},
                {"say": THEN, "gap_ms": 500},
            ],
        }
    )
    server, report = await scripted_agent_call(
        server_factory, tmp_path, vendors, script, listen_presets_path=greedy_preset(tmp_path),
        listen_endpointer_ends_turns=True, listen_greedy_replies=True
    )
    assert report.ok, report.summary
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    record = server.state.finished[sid]
    events = record.events
    cancelled = [e for e in events if e["event"] == "greedy_cancelled"]
    confirmed = [e for e in events if e["event"] == "greedy_confirmed"]
    assert any(c["reason"] in ("caller_resumed", "turn_cancelled") for c in cancelled), cancelled
    assert confirmed
    # Nothing of a scrapped reply reached Twilio: no mark of its turn, and no bot audio at all while
    # the caller was saying the paused turn (from its first word until its last).
    marks = {m["name"] for m in report.summary["marks"]}
    for c in cancelled:
        assert not [m for m in marks if m.startswith((f"a:s{c['turn']}", f"a:w{c['turn']}.", f"a:c{c['turn']}."))]
    line = report.of("caller_line")[0]
    bot = report.of("bot_audio_start") + report.of("bot_audio_end")
    during = [e for e in bot if line["start_ms"] <= e["t_ms"] <= line["end_ms"]]
    assert not during, during
    assert not report.of("clear")  # a scrapped reply needs no clear: none of it was sent
    # the scrapped reply was asked for and synthesized (held at the player), so there was audio to leak
    assert any(m["content"] == FIRST for r in oa.requests for m in r["messages"] if m["role"] == "user")
    assert any(" ".join(w for w, _, _ in words).startswith("Sure") for words in ct.spoken.values()), ct.spoken
    # The conversation goes on: one caller turn with all its words, answered once, in full.
    callers = [t["text"] for t in record.transcript if t["role"] == "caller"]
    assert callers == [f"{FIRST} {REST}", THEN], record.transcript
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert [b["heard"] for b in bots[1:]] == ["A table for four tomorrow evening. What time?", "Seven it is. See you then."]
    # The LLM never saw the scrapped exchange: its last request holds the two whole caller turns.
    last = oa.requests[-1]["messages"]
    users = [m["content"] for m in last if m["role"] == "user"]
    assert users == [f"{FIRST} {REST}", THEN], last
    assert SCRAPPED not in json.dumps(last)
    assert SCRAPPED not in json.dumps(record.transcript)


# --- complete turns: the greedy reply is asked on the interim words and kept when the final says them ---

LINE, NEXT = "I would like to book a table.", "Seven would be great."
CHANGED = "I would like to book a cab."  # what the STT's final says when it revises its interim guess
REPLIES = {  # by the caller's words, case and punctuation aside (the greedy request has the interim's)
    "i would like to book a table": "Sure, for how many people?",
    "i would like to book a cab": "A cab, of course. Where to?",
    "seven would be great": "Seven it is. See you then.",
}


def reply_by_words(request) -> Reply:
    words = " ".join(w.strip(".,!?").lower() for w in last_user_text(request).split())
    return Reply(text=REPLIES.get(words, "Sorry, could you say that again?"))


@pytest.fixture
def interim_vendors(tmp_path) -> Iterator[tuple[DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    """Stand-ins whose interims come every second of speech (Deepgram's cadence) and catch up with the
    last word 200 ms after it, unpunctuated and lower-case (the final is punctuated), and whose final comes
    800 ms after Finalize: a greedy reply asked on the interim has its audio synthesized and held well
    before the final words arrive (with 400 ms, a loaded CI machine once had the final first, and the
    scrapped reply had no audio to leak)."""
    yield from agent_vendors(
        tmp_path, deepgram=dict(final_ms=800, interim_every_ms=1000, endpoint_ms=800, interim_tail_ms=200,
                                interim_punctuation=False),
        default=reply_by_words,
    )


async def _two_turn_call(server_factory, tmp_path, vendors, first):
    dg, _, _ = vendors
    dg.say(first, NEXT)
    script = parse_script(
        {"voice": VOICE, "tail_ms": 2500, "step": [{"say": LINE, "gap_ms": 500}, {"say": NEXT, "gap_ms": 500}]}
    )
    server, report = await scripted_agent_call(
        server_factory, tmp_path, vendors, script, listen_endpointer_ends_turns=True, listen_greedy_replies=True
    )
    assert report.ok, report.summary
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    return server.state.finished[sid], report


def _first(events, kind, **match):
    return next(e for e in events if e["event"] == kind and all(e.get(k) == v for k, v in match.items()))


def _inner_pause_scraps(events, turn: int) -> None:
    """Greedy replies before `turn` were asked at a pause inside the line (the caller went on): scrapped so."""
    early = [e for e in events if e["event"] == "greedy_cancelled" and e["turn"] < turn]
    assert all(e["reason"] in ("caller_resumed", "turn_cancelled") for e in early), early


async def test_a_complete_turn_keeps_its_greedy_reply_asked_on_the_interim_words(server_factory, tmp_path, interim_vendors):
    _, oa, _ = interim_vendors
    record, report = await _two_turn_call(server_factory, tmp_path, interim_vendors, LINE)
    events = record.events
    asked = _first(events, "greedy_reply", text="i would like to book a table")  # the interim's words
    turn = asked["turn"]
    _inner_pause_scraps(events, turn)
    # asked before the STT's final words were in ...
    assert asked["t_ms"] < _first(events, "user_transcript", text=LINE)["t_ms"], events
    # ... and kept: the final says the same words, case and punctuation aside; never asked again
    assert _first(events, "greedy_confirmed", turn=turn)
    assert not [e for e in events if e["event"] == "greedy_cancelled" and e["turn"] >= turn], events
    users = [last_user_text(r) for r in oa.requests]
    assert users.count("i would like to book a table") == 1 and LINE not in users, users
    assert users[-1] == "seven would be great", users  # (the next line's greedy reply, also kept)
    lat = next(t for t in record.latency if t["turn"] == turn)
    assert lat["greedy"] and lat["llm_asked_ms"] < lat["turn_closed_ms"], lat
    # the caller heard that reply, whole; the context and the transcript hold the final's words
    bots = [t["heard"] for t in record.transcript if t["role"] == "bot"]
    assert bots[1:] == ["Sure, for how many people?", "Seven it is. See you then."], record.transcript
    assert [t["text"] for t in record.transcript if t["role"] == "caller"] == [LINE, NEXT]
    # (the next line's request went out with its interim words, once the first had the final's in the context)
    assert [m["content"] for m in oa.requests[-1]["messages"] if m["role"] == "user"] == [LINE, "seven would be great"]
    assert not report.of("clear")


async def test_a_changed_final_scraps_the_greedy_reply_unheard_and_asks_again(server_factory, tmp_path, interim_vendors):
    _, oa, ct = interim_vendors
    record, report = await _two_turn_call(server_factory, tmp_path, interim_vendors, (LINE, CHANGED))
    events = record.events
    asked = _first(events, "greedy_reply", text="i would like to book a table")  # the interim's guess
    turn = asked["turn"]
    _inner_pause_scraps(events, turn)
    assert _first(events, "greedy_cancelled", turn=turn)["reason"] == "text_changed"
    assert not [e for e in events if e["event"] == "greedy_confirmed" and e["turn"] == turn]
    # the scrapped reply was asked for and synthesized (held at the player): there was audio to leak ...
    assert any(words[0][0] == "Sure," for words in ct.spoken.values() if words), ct.spoken  # (its first clause)
    # ... and none of it reached Twilio: no mark of its turn (every clause sent is followed by one), no clear
    marks = [m["name"] for m in report.summary["marks"]]
    assert not [m for m in marks if m.startswith((f"a:s{turn}", f"a:w{turn}.", f"a:c{turn}."))], marks
    assert not report.of("clear")
    # asked again on the final's words; the caller heard that reply, and the LLM never saw the scrapped one
    users = [last_user_text(r) for r in oa.requests]
    assert users.index(CHANGED) > users.index("i would like to book a table"), users
    assert users[-1] == "seven would be great", users
    bots = [t for t in record.transcript if t["role"] == "bot"]
    assert [b["heard"] for b in bots[1:]] == ["A cab, of course. Where to?", "Seven it is. See you then."]
    assert [t["text"] for t in record.transcript if t["role"] == "caller"] == [CHANGED, NEXT]
    assert "for how many people" not in json.dumps(oa.requests[-1]["messages"])
