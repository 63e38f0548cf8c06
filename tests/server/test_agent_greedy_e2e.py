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
