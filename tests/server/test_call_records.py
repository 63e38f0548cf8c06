"""Call records in the database, read back through GET /calls: a real call, status callbacks, listing."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import httpx
from twilio.request_validator import RequestValidator

from callgate.audio import save_wav, to_int16
from callgate.synth import make_voicemail_greeting, speech, telephone_channel
from simulator.phone import new_sid, simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN, FAST_STREAM, wait_until

VALIDATOR = RequestValidator(AUTH_TOKEN)
TO = "+12025550123"


def post_status(server, params: dict[str, str], *, signed: bool = True) -> httpx.Response:
    url = f"{server.settings.public_base_url}/status"
    headers = {"X-Twilio-Signature": VALIDATOR.compute_signature(url, params)} if signed else {}
    return httpx.post(f"{server.base_url}/status", data=params, headers=headers)


def status_params(call_sid: str, status: str, seq: int, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": status, "SequenceNumber": str(seq),
        "From": "+15550001111", "To": "+15552223333", "Direction": "outbound-api", **extra,
    }


async def test_a_voicemail_call_is_recorded_with_verdict_beep_events_and_outcome(server_factory, tmp_path):
    greeting = make_voicemail_greeting(
        "Hi, you have reached Sam. Please leave a message after the tone.", beep_hz=850, beep_secs=0.5
    )
    message = tmp_path / "messages" / "short.wav"
    save_wav(message, to_int16(telephone_channel(speech("Please call us back."))))
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, **FAST_STREAM)
        report = await simulate_call(
            to_int16(greeting.audio), f"{server.base_url}/twiml", speed=4.0, auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID, params={"message": message.name, "campaign": "spring"}, rest=rest,
            from_number="+15550001111", to_number="+15552223333",
        )
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the call to end")
    await wait_until(lambda: server.state.store.depth == 0, what="the writer to flush")

    call = httpx.get(f"{server.base_url}/calls/{sid}", headers=AUTH).json()
    assert call["outcome"] == "message_played" and call["status"] == "completed"
    assert call["workflow"] == "voicemail_drop" and call["campaign_id"] == "spring"
    assert call["from_number"] == "+15550001111" and call["to_number"] == "+15552223333"
    assert call["beep"] is True and abs(call["beep_hz"] - 850) <= 10
    assert call["message_started_ms"] >= call["beep_end_ms"] >= greeting.beep_offset_ms - 60
    assert call["amd_label"] in ("machine", "unknown") and call["amd_detector"]
    assert call["marks_played"] >= 1 and call["marks_cancelled"] == 0
    assert call["counters"]["audio_ms"] > 3000 and call["ended_at"] > call["started_at"] >= call["created_at"]
    names = [e["event"] for e in call["events"]]
    assert names.index("beep") < names.index("beep_end") < names.index("play_message") < names.index("hangup")
    assert call["event_count"] == len(call["events"])

    listing = httpx.get(f"{server.base_url}/calls", params={"outcome": "message_played", "campaign": "spring"},
                        headers=AUTH)
    assert [c["call_sid"] for c in listing.json()["calls"]] == [sid]
    assert httpx.get(f"{server.base_url}/calls", params={"campaign": "autumn"}, headers=AUTH).json()["count"] == 0
    later = httpx.get(f"{server.base_url}/calls", params={"since": time.time() + 60}, headers=AUTH).json()
    assert later["count"] == 0
    assert httpx.get(f"{server.base_url}/calls", params={"limit": 0}, headers=AUTH).status_code == 422
    assert httpx.get(f"{server.base_url}/calls/CAunknown", headers=AUTH).status_code == 404
    # The records are behind the API key like the rest of the control API.
    assert httpx.get(f"{server.base_url}/calls").status_code == 401
    assert httpx.get(f"{server.base_url}/calls/{sid}").status_code == 401


async def test_status_callbacks_record_outcomes_that_never_reach_a_stream(server_factory):
    server = server_factory()
    busy, answered = new_sid("CA"), new_sid("CA")
    for seq, status in enumerate(["initiated", "ringing", "busy"]):
        assert post_status(server, status_params(busy, status, seq)).status_code == 204
    for seq, status in enumerate(["initiated", "ringing", "in-progress"]):
        assert post_status(server, status_params(answered, status, seq)).status_code == 204
    r = post_status(server, status_params(answered, "completed", 3, CallDuration="42", AnsweredBy="human"))
    assert r.status_code == 204

    # Unsigned or forged callbacks change nothing.
    assert post_status(server, status_params(busy, "completed", 9), signed=False).status_code == 403
    forged = status_params(busy, "completed", 9)
    bad = httpx.post(f"{server.base_url}/status", data=forged, headers={"X-Twilio-Signature": "AAAA"})
    assert bad.status_code == 403
    missing = {"CallSid": busy, "AccountSid": ACCOUNT_SID}
    assert post_status(server, missing).status_code == 400

    await wait_until(lambda: server.state.store.depth == 0, what="the writer to flush")
    b = httpx.get(f"{server.base_url}/calls/{busy}", headers=AUTH).json()
    assert b["outcome"] == "busy" and b["twilio_status"] == "busy" and b["status"] == "completed"
    assert [e["event"] for e in b["events"]] == ["status_initiated", "status_ringing", "status_busy"]
    a = httpx.get(f"{server.base_url}/calls/{answered}", headers=AUTH).json()
    assert a["twilio_status"] == "completed" and a["twilio_duration_secs"] == 42 and a["answered_by"] == "human"
    assert a["outcome"] is None  # a stream-less 'completed' does not invent an outcome
    assert a["events"][-1] == {**a["events"][-1], "event": "status_completed", "CallDuration": "42"}
    busy_calls = httpx.get(f"{server.base_url}/calls?outcome=busy", headers=AUTH).json()["calls"]
    assert {c["call_sid"] for c in busy_calls} == {busy}


async def test_place_call_asks_for_status_callbacks_and_records_the_call(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, twilio_from_number="+15550009999")
        async with httpx.AsyncClient(headers=AUTH) as client:  # the stand-in answers on this test's event loop
            r = await client.post(f"{server.base_url}/calls", json={"to": TO, "campaign": "c-1"})
            bad = await client.post(f"{server.base_url}/calls", json={"to": TO, "campaign": "x y"})
    assert r.status_code == 201, r.text
    assert bad.status_code == 422
    created = rest.calls_created[0]
    assert created["StatusCallback"] == f"{server.settings.public_base_url}/status"
    assert created["StatusCallbackMethod"] == "POST"
    assert created["Url"].endswith("/twiml?workflow=voicemail_drop&campaign=c-1")
    # The form repeats StatusCallbackEvent once per event; the stand-in's dict keeps the last one.
    assert created["StatusCallbackEvent"] == "completed"
    await wait_until(lambda: server.state.store.depth == 0, what="the writer to flush")
    call = httpx.get(f"{server.base_url}/calls/{r.json()['call_sid']}", headers=AUTH).json()
    assert call["status"] == "queued" and call["campaign_id"] == "c-1" and call["to_number"] == TO


async def test_draining_server_turns_new_webhooks_away_politely(server_factory):
    server = server_factory()
    server.state.drain.begin()
    params = {"CallSid": new_sid("CA"), "AccountSid": ACCOUNT_SID}
    url = f"{server.settings.public_base_url}/twiml"
    r = httpx.post(f"{server.base_url}/twiml", data=params,
                   headers={"X-Twilio-Signature": VALIDATOR.compute_signature(url, params)})
    root = ET.fromstring(r.text)
    assert r.status_code == 200 and [c.tag for c in root] == ["Say", "Hangup"]
    assert "try again" in root.find("Say").text
    assert httpx.get(f"{server.base_url}/readyz").status_code == 503
    assert httpx.post(f"{server.base_url}/calls", json={"to": TO}, headers=AUTH).status_code == 503

    other = server_factory(drain_action="redirect", drain_redirect_url="https://other.example.com/twiml")
    other.state.drain.begin()
    url = f"{other.settings.public_base_url}/twiml"
    r = httpx.post(f"{other.base_url}/twiml", data=params,
                   headers={"X-Twilio-Signature": VALIDATOR.compute_signature(url, params)})
    assert ET.fromstring(r.text).find("Redirect").text == "https://other.example.com/twiml"
