"""AMD through the simulator and the real server: a human gets the human action, never the message."""

from __future__ import annotations

from fastapi import FastAPI, Request

from callgate.audio import to_int16
from callgate.synth import concat, silence, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from simulator.serve import BackgroundServer
from tests.server.conftest import ACCOUNT_SID, AUTH_TOKEN, wait_until

REP_NUMBER = "+15557650000"


async def test_human_pickup_is_connected_to_a_rep_and_hears_no_message(server_factory):
    audio = telephone_channel(concat(silence(0.6), speech("Hello?", voice="en-us+m3"), silence(6.0)))
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, connect_number=REP_NUMBER)
        report = await simulate_call(
            to_int16(audio), f"{server.base_url}/twiml", speed=1.0, auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID, params={"workflow": "voicemail_drop"}, rest=rest, tail_secs=5,
        )
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the server to close the call")
    record = server.state.finished[sid]
    events = {e["event"]: e for e in record.events}
    assert events["amd"]["label"] == "human", record.events
    assert "play_message" not in events and not report.of("media_start")
    assert events["connect"]["ok"] is True and record.outcome == "connect"
    updates = [r for r in rest.requests if "Twiml" in r.get("form", {})]
    assert len(updates) == 1 and f"<Number>{REP_NUMBER}</Number>" in updates[0]["form"]["Twiml"]
    assert not [r for r in rest.requests if r.get("form", {}).get("Status") == "completed"]  # no hang-up
    assert report.summary["ended_by"] == "update"
    # The human verdict came quickly after the first utterance ended.
    assert events["amd"]["t_ms"] - events["speech_end"]["t_ms"] <= 1000


async def test_parallel_dial_reports_verdict_to_callback(server_factory):
    received: list[dict] = []
    app = FastAPI()

    @app.post("/amd")
    async def amd(request: Request) -> dict:
        received.append(await request.json())
        return {"ok": True}

    hook = BackgroundServer(app, host="127.0.0.1", port=0)
    await hook.start()
    try:
        audio = telephone_channel(concat(silence(0.5), speech("Hi, this is Dana.", voice="en-us+f2"), silence(5.0)))
        async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
            server = server_factory(twilio_api_base_url=rest.base_url, amd_callback_url=f"{hook.base_url}/amd")
            report = await simulate_call(
                to_int16(audio), f"{server.base_url}/twiml", speed=1.0, auth_token=AUTH_TOKEN,
                account_sid=ACCOUNT_SID, params={"workflow": "parallel_dial"}, rest=rest, tail_secs=4,
            )
        sid = report.summary["call_sid"]
        await wait_until(lambda: received, what="the AMD callback")
    finally:
        await hook.stop()
    assert received[0]["call_sid"] == sid and received[0]["workflow"] == "parallel_dial"
    assert received[0]["label"] in {"human", "machine", "ivr", "carrier_intercept", "unknown"}
    await wait_until(lambda: sid in server.state.finished)
    amd_events = [e for e in server.state.finished[sid].events if e["event"] == "amd"]
    assert len(amd_events) == 1 and amd_events[0]["label"] == received[0]["label"]
