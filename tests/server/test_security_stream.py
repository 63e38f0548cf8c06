"""Hostile Media Streams against a real server in secure mode over real sockets: malformed input is
counted and never fatal, clock jumps drop no real audio, and streams are bounded (rate, lead, size)."""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets

from callgate.audio import pcm_to_ulaw
from tests.server.conftest import wait_until
from tests.server.test_bad_input import open_call

SILENCE = pcm_to_ulaw(b"\x00\x00" * 160)
B64 = base64.b64encode(SILENCE).decode()


async def test_malformed_input_is_counted_never_fatal_and_the_call_survives(server_factory):
    server = server_factory()
    sid = "CA" + "d" * 32
    client = await open_call(server, sid)
    await client.send_connected()
    # before `start`: a start with a NUL in a custom parameter, deep nesting, a non-finite number
    await client.send_start({**client.parameters, "workflow": "voicemail_drop\x00"})
    await client.send_raw("[" * 5000 + "]" * 5000)
    await client.send_raw('{"event": "media", "media": {"timestamp": 1e999, "payload": "' + B64 + '"}}')
    await client.send_start(client.parameters)
    # after `start`: every kind of broken message
    hostile = [
        '{"event": "media", "media": {"timestamp": 1e999, "chunk": "1", "payload": "' + B64 + '"}}',
        '{"event": "media", "media": {"timestamp": NaN, "payload": "' + B64 + '"}}',
        '{"event": "media", "media": ' + '{"a": ' * 2000 + "1" + "}" * 2001,
        '{"event": ["media"]}',
        '{"event": "media", "media": {"chunk": [1], "timestamp": {"a": 1}, "payload": "' + B64 + '"}}',
        '{"event": "media", "media": {"track": 5, "payload": "' + B64 + '"}}',
        '{"event": "media", "media": {"payload": 12}}',
        '{"event": "mark", "mark": {"name": {"x": 1}}}',
        '{"event": "dtmf", "dtmf": {"digit": null}}',
        '{"event": "stop", "stop": "now"}',
        '{"event": "stop", "stop": {"callSid": "CA' + "e" * 32 + '"}}',
        '{"event": "stop", "stop": {"callSid": 42}}',
        '{"event": "media", "media": {"chunk": "' + "9" * 5000 + '", "payload": "' + B64 + '"}}',
    ]
    for raw in hostile:
        await client.send_raw(raw)
    for _ in range(40):
        await client.send_media(SILENCE)
        await asyncio.sleep(0.005)
    await client.send_stop()
    await wait_until(lambda: sid in server.state.finished, what="the call to finish")
    await client.close()
    record = server.state.finished[sid]
    c = record.counters
    assert record.outcome == "remote_hangup", (record.outcome, c)  # acted on the real stop only
    assert c["bad_start"] == 1 and c["too_deep"] == 2 and c["non_finite"] == 3 and c["bad_event"] == 1
    assert c["bad_stop"] == 2 and c["bad_fields"] == 3 and c["bad_payload"] == 1 and c["bad_dtmf"] == 1
    assert c["bad_chunk"] == 2 and c["bad_timestamp"] == 1  # counted, and the audio kept
    assert c["media_frames"] == 40 + 2 and c["event_stop"] == 4
    assert c["messages"] == len(hostile) + 40 + 1
    assert not server.state.rejected  # nothing here was worth closing the stream for


async def test_clock_jumps_over_the_socket_drop_no_real_audio(server_factory):
    server = server_factory()
    sid = "CA" + "f" * 32
    client = await open_call(server, sid)
    await client.send_connected()
    await client.send_start(client.parameters)
    for n in range(1, 61):
        if n == 10:
            await client.send_media(SILENCE, chunk=n, timestamp=10**9)  # one wild timestamp
        elif n == 30:
            await client.send_media(SILENCE, chunk=10**9, timestamp=(n - 1) * 20)  # one wild chunk
        else:
            await client.send_media(SILENCE, chunk=n)
        await asyncio.sleep(0.005)
    await client.send_stop()
    await wait_until(lambda: sid in server.state.finished, what="the call to finish")
    await client.close()
    c = server.state.finished[sid].counters
    assert c["media_frames"] == 60 and c["audio_ms"] == 60 * 20
    assert c["clock_jumps"] == 2 and c["clock_outliers"] == 2
    assert "duplicate_or_late" not in c and "gaps" not in c


async def test_a_flooding_stream_is_dropped_counted_and_closed(server_factory):
    server = server_factory()
    sid = "CA" + "7" * 32
    client = await open_call(server, sid)
    await client.send_connected()
    await client.send_start(client.parameters)
    sent = 0
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(200_000):  # valid 20 ms frames as fast as the socket takes them
            await client.send_media(SILENCE)
            sent += 1
            if sent % 200 == 0:
                await asyncio.sleep(0)
        await client.recv(timeout=10)
    await wait_until(lambda: sid in server.state.finished, what="the flood to be closed")
    assert client.close_code == 1008 and "limit" in client.close_reason
    c = server.state.finished[sid].counters
    print(f"\nflood: {sent} messages sent before the close; counters {dict(c)}")
    assert c["closed_for_violation"] == 1 and c.get("rate_limited", 0) + c.get("media_ahead", 0) > 250
    assert c["audio_ms"] <= 1500 + 1000  # never more audio than wall time (well under 1 s here) + the lead
    assert server.state.rejected == {"stream_limits": 1}


async def test_oversized_messages_and_payloads_are_refused(server_factory):
    server = server_factory()
    sid = "CA" + "8" * 32
    client = await open_call(server, sid)
    await client.send_connected()
    await client.send_start(client.parameters)
    await client.send_media(b"\xff" * 48_000)  # 6 s of audio in one message: over the message cap
    await client.send_media(b"\xff" * 100)  # not a whole frame
    await client.send_media(b"\xff" * 1600)  # 10 frames: over the per-message frame cap
    await client.send_media(SILENCE)
    await wait_until(lambda: server.state.active.get(sid) is not None, what="the call to run")
    await asyncio.sleep(0.5)  # let the server read the above before the socket is dropped
    await client.send_raw("x" * (80 * 1024))  # over WS_MAX_SIZE: the server drops the socket (1009)
    with pytest.raises(websockets.ConnectionClosed):
        await client.recv(timeout=10)
    assert client.close_code == 1009
    await wait_until(lambda: sid in server.state.finished, what="the call to end")
    c = server.state.finished[sid].counters
    assert (c.get("oversize"), c.get("bad_payload_size"), c.get("bad_payload"), c.get("media_frames")) == (1, 1, 1, 1), c
