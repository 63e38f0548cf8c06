"""Webhook and WebSocket authentication against a real server over real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.server.conftest import ACCOUNT_SID, AUTH_TOKEN, wait_until

CALL_SID = "CA" + "1" * 32
OTHER_SID = "CA" + "2" * 32
VALIDATOR = RequestValidator(AUTH_TOKEN)


def webhook_params(call_sid: str = CALL_SID) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": "+15550001111", "To": "+15550002222"}


def signed_webhook(server, params: dict[str, str], query: str = "") -> httpx.Response:
    url = f"{server.settings.public_base_url}/twiml" + (f"?{query}" if query else "")
    sig = VALIDATOR.compute_signature(url, params)
    return httpx.post(
        f"{server.base_url}/twiml" + (f"?{query}" if query else ""),
        data=params,
        headers={"X-Twilio-Signature": sig},
    )


def stream_url_from(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url"), params


def start_msg(call_sid: str, params: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "3" * 32,
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": "MZ" + "3" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def open_stream(url: str, *, sign: bool = True, signature: str | None = None):
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = signature or VALIDATOR.compute_signature(url, {})
    return await websockets.connect(url, additional_headers=headers)


async def expect_close(ws, code: int = 1008) -> str:
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=15)
    assert info.value.rcvd is not None and info.value.rcvd.code == code, info.value
    return info.value.rcvd.reason


def test_webhook_rejects_missing_and_bad_signatures(server_factory):
    server = server_factory()
    params = webhook_params()
    assert httpx.post(f"{server.base_url}/twiml", data=params).status_code == 403
    bad = httpx.post(f"{server.base_url}/twiml", data=params, headers={"X-Twilio-Signature": "AAAA"})
    assert bad.status_code == 403
    # Signed for the Host header the server saw, not the configured public URL: still refused.
    sig_for_wrong_url = VALIDATOR.compute_signature("http://evil.example/twiml", params)
    assert (
        httpx.post(
            f"{server.base_url}/twiml", data=params, headers={"X-Twilio-Signature": sig_for_wrong_url}
        ).status_code
        == 403
    )
    ok = signed_webhook(server, params, query="workflow=voicemail_drop")
    assert ok.status_code == 200
    url, stream_params = stream_url_from(ok.text)
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws/[\w.\-]+", url) and "?" not in url
    assert stream_params == {"workflow": "voicemail_drop"}
    assert server.state.rejected == {"webhook_signature": 3}


def test_webhook_rejects_unknown_workflow(server_factory):
    server = server_factory()
    response = signed_webhook(server, webhook_params(), query="workflow=nope")
    assert response.status_code == 400 and "unknown workflow" in response.text


async def expect_403(url: str, **kwargs) -> None:
    """The upgrade is refused before accept(): an HTTP 403, no WebSocket."""
    with pytest.raises(websockets.InvalidStatus) as info:
        await open_stream(url, **kwargs)
    assert info.value.response.status_code == 403


async def test_websocket_without_or_with_bad_signature_gets_403_before_accept(server_factory):
    server = server_factory()
    url, _ = stream_url_from(signed_webhook(server, webhook_params()).text)
    await expect_403(url, sign=False)
    await expect_403(url, signature="bm90IGEgc2lnbmF0dXJl")
    assert server.state.rejected["websocket_signature"] == 2
    assert not server.state.active and not server.state.finished


async def test_unknown_reused_expired_tokens_and_callsid_mismatch(server_factory):
    server = server_factory(token_ttl_secs=1.0)
    # unknown token
    await expect_403(f"{server.settings.stream_base_url}/ws/not-a-token")

    # a good token works once...
    url, params = stream_url_from(signed_webhook(server, webhook_params()).text)
    ws = await open_stream(url)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(start_msg(CALL_SID, params))
    await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2", "stop": {"callSid": CALL_SID}}))
    await expect_close(ws, code=1000)
    await wait_until(lambda: CALL_SID in server.state.finished, what="the call to finish")
    # ...and is refused the second time.
    await expect_403(url)

    # CallSid in `start` differs from the webhook's.
    url, params = stream_url_from(signed_webhook(server, webhook_params(OTHER_SID)).text)
    ws = await open_stream(url)
    await ws.send(start_msg(CALL_SID.replace("1", "9"), params))
    assert "callSid" in await expect_close(ws)

    # expired
    url, params = stream_url_from(signed_webhook(server, webhook_params(OTHER_SID)).text)
    await asyncio.sleep(2.2)
    await expect_403(url)

    # No pipeline started for any rejected stream.
    assert set(server.state.finished) == {CALL_SID}
    assert not server.state.active
    assert server.state.rejected == {"token": 3, "start_mismatch": 1}


async def test_dev_mode_accepts_unsigned_requests(server_factory):
    server = server_factory(twilio_auth_token=None)
    response = httpx.post(f"{server.base_url}/twiml", data=webhook_params())
    assert response.status_code == 200
    url, params = stream_url_from(response.text)
    ws = await open_stream(url, sign=False)
    await ws.send(start_msg(CALL_SID, params))
    await ws.send(json.dumps({"event": "stop", "stop": {"callSid": CALL_SID}}))
    await expect_close(ws, code=1000)
    await wait_until(lambda: CALL_SID in server.state.finished, what="the call to finish")
    assert server.state.finished[CALL_SID].outcome == "remote_hangup"
