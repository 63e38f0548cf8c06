"""Hostile and broken streams: the call survives or ends cleanly, neighbours are unaffected, counters tell."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from twilio.request_validator import RequestValidator

from callgate.audio import pcm_to_ulaw
from simulator.phone import StreamClient, parse_twiml
from tests.server.conftest import ACCOUNT_SID, AUTH_TOKEN, wait_until

SILENCE = pcm_to_ulaw(b"\x00\x00" * 160)


def place(server, call_sid: str) -> tuple[str, dict[str, str]]:
    params = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": "+15550001111", "To": "+15550002222"}
    url = f"{server.settings.public_base_url}/twiml"
    sig = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    response = httpx.post(f"{server.base_url}/twiml", data=params, headers={"X-Twilio-Signature": sig})
    response.raise_for_status()
    twiml = parse_twiml(response.text)
    return twiml.url, twiml.parameters


async def open_call(server, call_sid: str) -> StreamClient:
    url, params = place(server, call_sid)
    client = await StreamClient.connect(
        url, auth_token=AUTH_TOKEN, call_sid=call_sid, account_sid=ACCOUNT_SID
    )
    client.parameters = params
    return client


async def well_behaved_call(server, call_sid: str, frames: int) -> None:
    client = await open_call(server, call_sid)
    await client.send_connected()
    await client.send_start(client.parameters)
    for _ in range(frames):
        await client.send_media(SILENCE)
        await asyncio.sleep(0.005)
    await client.send_stop()
    await wait_until(lambda: call_sid in server.state.finished, what="the good call to finish")
    await client.close()


async def hostile_call(server, call_sid: str) -> None:
    client = await open_call(server, call_sid)
    await client.send_connected()
    await client.send_media(SILENCE)  # media before start
    await client.send_media(SILENCE)
    client.chunk = 0
    await client.send_start(client.parameters)
    await client.send_raw("{not json")
    await client.send_raw('["an", "array"]')
    await client.send_event("surprise", {"x": 1})
    await client.send_raw(b"\x00\x01binary")
    await client.send_raw('{"event": "media", "pad": "' + "x" * (32 * 1024) + '"}')  # 32 KB: over the message cap
    await client.send_event("media", {"media": {"payload": "***not base64***", "chunk": "0"}})
    for chunk in range(1, 11):
        await client.send_media(SILENCE, chunk=chunk)
    await client.send_media(SILENCE, chunk=14)  # chunks 11-13 lost: 60 ms gap
    await client.send_media(SILENCE, chunk=14)  # duplicate
    await client.send_media(SILENCE, chunk=12)  # late, out of order
    await client.send_media(SILENCE, chunk=15)
    await client.send_dtmf("5")
    await client.send_stop()
    await wait_until(lambda: call_sid in server.state.finished, what="the hostile call to finish")
    await client.close()


async def test_bad_input_is_counted_and_neighbours_are_unaffected(server_factory):
    server = server_factory()
    hostile, good = "CA" + "a" * 32, "CA" + "b" * 32
    await asyncio.gather(hostile_call(server, hostile), well_behaved_call(server, good, frames=50))

    bad = server.state.finished[hostile]
    assert bad.outcome == "remote_hangup" and bad.status == "completed"
    c = bad.counters
    assert c["media_before_start"] == 2
    assert c["malformed_json"] == 2  # invalid JSON and a JSON array
    assert c["unknown_event"] == 1
    assert c["binary"] == 1
    assert c["oversize"] == 1
    assert c["bad_payload"] == 1
    assert c["gaps"] == 1 and c["gap_fill_ms"] == 60
    assert c["duplicate_or_late"] == 2
    assert c["media_frames"] == 12
    assert c["event_dtmf"] == 1
    assert c["audio_ms"] == 15 * 20  # audio time stays true: 12 frames + 3 filled

    ok = server.state.finished[good]
    assert ok.outcome == "remote_hangup"
    assert ok.counters["media_frames"] == 50 and ok.counters["audio_ms"] == 1000
    assert not any(
        k in ok.counters for k in ("malformed_json", "binary", "oversize", "gaps", "duplicate_or_late")
    )


async def test_stream_without_start_starts_no_pipeline(server_factory):
    server = server_factory()
    client = await open_call(server, "CA" + "c" * 32)
    await client.send_connected()
    await client.send_media(SILENCE)
    await client.close()
    await wait_until(lambda: server.state.rejected.get("no_start") == 1, what="the stream to be rejected")
    assert not server.state.active and not server.state.finished


@pytest.mark.parametrize("timestamps", [True, False])
async def test_gaps_are_filled_from_timestamps_or_chunks(server_factory, timestamps):
    server = server_factory()
    call_sid = "CA" + ("d" if timestamps else "e") * 32
    client = await open_call(server, call_sid)
    await client.send_start(client.parameters)
    for chunk in (1, 2, 3, 8, 9):  # 4 frames (80 ms) lost
        if timestamps:
            await client.send_media(SILENCE, chunk=chunk)
        else:
            await client.send_event("media", {"media": {"chunk": str(chunk), "payload": client_payload()}})
    await client.send_stop()
    await wait_until(lambda: call_sid in server.state.finished)
    await client.close()
    c = server.state.finished[call_sid].counters
    assert c["gap_fill_ms"] == 80 and c["audio_ms"] == 9 * 20


def client_payload() -> str:
    import base64

    return base64.b64encode(SILENCE).decode()
