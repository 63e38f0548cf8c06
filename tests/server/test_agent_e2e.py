"""agent end to end: the simulator's scripted caller <-> the real server over a real WebSocket, with the
Deepgram, OpenAI and Cartesia stand-ins speaking their real wire protocols (the real Pipecat services)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from pipelines.services.chat_server import Reply
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from simulator.script import parse_script
from simulator.vendors import CartesiaStandIn, DeepgramStandIn, OpenAIStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH_TOKEN, wait_until

AGENT = """name = "tester"
system_prompt = "You are a test agent."
first_message = "Hi, this is the test agent. How can I help?"
end_call_phrases = ["goodbye"]
max_call_secs = 120
"""


@pytest.fixture
def vendors(tmp_path) -> Iterator[tuple[DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "tester.toml").write_text(AGENT)
    dg = DeepgramStandIn(transcriber=None, final_ms=150, interim_every_ms=200, endpoint_ms=300).start()
    oa = OpenAIStandIn(first_token_ms=100).start()
    ct = CartesiaStandIn(first_audio_ms=80, realtime_factor=4.0).start()
    try:
        yield dg, oa, ct
    finally:
        for v in (dg, oa, ct):
            v.stop()


def agent_server(server_factory, tmp_path, rest, vendors, **overrides):
    dg, oa, ct = vendors
    return server_factory(
        twilio_api_base_url=rest.base_url,
        agents_dir=tmp_path / "agents",
        deepgram_api_key="dg-test",
        deepgram_base_url=dg.base_url,
        openai_api_key="oa-test",
        openai_base_url=oa.base_url,
        cartesia_api_key="ct-test",
        cartesia_url=ct.url,
        **overrides,
    )


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
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = agent_server(server_factory, tmp_path, rest, vendors)
        report = await simulate_call(
            np.zeros(0, np.int16),
            f"{server.base_url}/twiml",
            auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            params={"workflow": "agent", "agent": "tester", "amd": "off"},
            rest=rest,
            script=script,
        )
    assert report.ok, report.summary
    assert [ev["text"] for ev in report.of("caller_line")] == lines  # all three turns were said
    # every bot clause is followed by a mark, and every one of them echoed as played
    clause_marks = [m for m in report.summary["marks"] if m["name"].startswith("a:c")]
    assert len(clause_marks) >= 4 and all(m["played"] for m in clause_marks), clause_marks
    assert not report.of("clear")

    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, timeout=15, what="the call record")
    async with httpx.AsyncClient() as client:
        record = (await client.get(f"{server.base_url}/calls/{sid}")).json()
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
