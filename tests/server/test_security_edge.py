"""Edge order against a real server in secure mode over raw sockets: cheap checks before any parsing,
WebSocket refusals before accept(), slow-loris timeouts, and a rejection log that cannot be flooded."""

from __future__ import annotations

import asyncio
import time

import httpx
from loguru import logger

from tests.server.conftest import wait_until
from tests.server.test_security import VALIDATOR, expect_403, signed_webhook, stream_url_from, webhook_params


async def raw_request(port: int, head: bytes, body: bytes = b"", read_timeout: float = 10.0) -> tuple[bytes, float]:
    """Send bytes on a fresh TCP connection; return what came back before the server closed, and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(head + body)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), timeout=read_timeout)
    finally:
        writer.close()
    return data, time.monotonic() - t0


def port_of(server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


async def test_webhook_refuses_before_reading_the_body(server_factory):
    server = server_factory()
    port = port_of(server)
    # No signature header: 403 at once, without waiting for a byte of the (never sent) body.
    form = b"Connection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n"
    data, took = await raw_request(port, b"POST /twiml HTTP/1.1\r\nHost: a\r\n" + form + b"\r\n", read_timeout=5)
    assert data.startswith(b"HTTP/1.1 403") and took < 1, (data[:200], took)
    # A declared 300 MB body is refused from the Content-Length alone (never spooled).
    huge = b"Connection: close\r\nContent-Length: 314572800\r\nContent-Type: multipart/form-data; boundary=x\r\n"
    data, took = await raw_request(
        port, b"POST /twiml HTTP/1.1\r\nHost: a\r\nX-Twilio-Signature: x\r\n" + huge + b"\r\n", read_timeout=5
    )
    assert data.startswith(b"HTTP/1.1 413") and took < 1, (data[:200], took)
    # Chunked (no Content-Length) and over the cap: refused once the cap is passed.
    async def chunks():
        for _ in range(100):
            yield b"a=" + b"x" * 4096 + b"&"
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{server.base_url}/twiml", content=chunks(),
            headers={"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 413
    # Multipart (never parsed) is refused by content type, even when small.
    r = httpx.post(f"{server.base_url}/twiml", files={"CallSid": ("a", b"CA1")}, headers={"X-Twilio-Signature": "x"})
    assert r.status_code == 415
    # A real Twilio request still works.
    assert signed_webhook(server, webhook_params()).status_code == 200
    assert server.state.rejected == {"webhook_signature": 1, "body_too_large": 2, "webhook_content_type": 1}


async def test_slow_loris_headers_and_bodies_are_cut_off(server_factory):
    server = server_factory(header_timeout_secs=1.0, body_timeout_secs=1.0)
    port = port_of(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"POST /twiml HTTP/1.1\r\nHost: a\r\n")  # ... and the rest of the head never comes
    for _ in range(30):  # trickle a header byte every 100 ms, as slow-loris does
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            break
        if reader.at_eof():
            break
        await asyncio.sleep(0.1)
    got = await asyncio.wait_for(reader.read(), timeout=5)
    head_closed_after = time.monotonic() - t0
    writer.close()
    assert got == b"" and head_closed_after < 2.5, head_closed_after
    # Whole head, body promised but never sent: 408 after body_timeout_secs.
    data, took = await raw_request(
        port,
        b"POST /twiml HTTP/1.1\r\nHost: a\r\nX-Twilio-Signature: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
        b"CallSid=CA",
    )
    assert data.startswith(b"HTTP/1.1 408") and 0.9 < took < 3, (data[:100], took)
    await wait_until(lambda: server.state.rejected.get("slow_headers") == 1, what="the slow head to be counted")
    assert server.state.rejected == {"slow_headers": 1, "slow_body": 1}


async def test_websocket_refusals_are_403_counted_and_start_nothing(server_factory):
    server = server_factory()
    url, _ = stream_url_from(signed_webhook(server, webhook_params()).text)
    await expect_403(url, sign=False)
    await expect_403(url.rsplit("/", 1)[0] + "/forged-token", signature=VALIDATOR.compute_signature(
        url.rsplit("/", 1)[0] + "/forged-token", {}))
    assert server.state.rejected == {"websocket_signature": 1, "token": 1}
    assert not server.state.active and not server.state.finished


def test_rejections_are_logged_at_a_limited_rate_but_all_counted(server_factory):
    server = server_factory(reject_log_per_minute=5)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        with httpx.Client() as client:
            codes = {client.post(f"{server.base_url}/twiml", data=webhook_params()).status_code for _ in range(40)}
    finally:
        logger.remove(sink)
    assert codes == {403}
    assert server.state.rejected == {"webhook_signature": 40}
    assert len([x for x in lines if "rejected (webhook_signature)" in x]) == 5
