"""State shared through the database: a Stream token used on one server process is refused by another
(two real `callgate serve` processes on one database), and `serve --workers 2` drains both workers."""

from __future__ import annotations

import asyncio
import json
import signal
import xml.etree.ElementTree as ET

import httpx
import websockets
from twilio.request_validator import RequestValidator

from simulator.phone import new_sid
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN
from tests.server.processes import ServerProcess

VALIDATOR = RequestValidator(AUTH_TOKEN)



def webhook_token(server: ServerProcess, call_sid: str) -> tuple[str, dict[str, str]]:
    """A signed webhook to `server`: the Stream token and the <Parameter>s `start` must repeat."""
    params = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID}
    sig = VALIDATOR.compute_signature(f"{server.base_url}/twiml", params)
    r = httpx.post(f"{server.base_url}/twiml", data=params, headers={"X-Twilio-Signature": sig})
    stream = ET.fromstring(r.text).find("Connect/Stream")
    return stream.get("url").rsplit("/ws/", 1)[1], {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


async def open_stream(server: ServerProcess, grant: tuple[str, dict[str, str]], call_sid: str) -> tuple[str, int | None]:
    """Connect with the token, send start; ('open', None) if the server kept the stream, else how it refused."""
    token, parameters = grant
    ws_url = server.base_url.replace("http://", "ws://") + f"/ws/{token}"
    sig = VALIDATOR.compute_signature(ws_url, {})
    try:
        ws = await websockets.connect(ws_url, additional_headers={"X-Twilio-Signature": sig})
    except websockets.InvalidStatus as e:
        return "refused", e.response.status_code
    async with ws:
        stream_sid = new_sid("MZ")
        start = {"accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": call_sid, "tracks": ["inbound"],
                 "customParameters": parameters,
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
        try:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                                      "start": start}))
            await asyncio.wait_for(ws.recv(), timeout=1.5)
        except TimeoutError:
            return "open", None
        except websockets.ConnectionClosed as e:
            return "closed", e.rcvd.code if e.rcvd else None
        return "open", None


async def test_a_stream_token_used_on_one_process_is_refused_by_another(tmp_path, database_url):
    a = ServerProcess(tmp_path, DATABASE_URL=database_url)
    b = ServerProcess(tmp_path, DATABASE_URL=database_url)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        sid = new_sid("CA")
        grant = await asyncio.to_thread(webhook_token, a, sid)
        first = await open_stream(a, grant, sid)
        replay_b = await open_stream(b, grant, sid)
        replay_a = await open_stream(a, grant, sid)

        # Control: B accepts a fresh token that A issued (same key): only the replay is refused.
        sid2 = new_sid("CA")
        fresh = await asyncio.to_thread(webhook_token, a, sid2)
        cross = await open_stream(b, fresh, sid2)
        replay_cross = await open_stream(a, fresh, sid2)
        rejected_b = httpx.get(f"{b.base_url}/stats", headers=AUTH).json()["rejected"]
    finally:
        a.stop()
        b.stop()
    print(f"first use {first}; replay on the other process {replay_b}; replay on the same {replay_a}")
    assert first == ("open", None) and cross == ("open", None)
    assert replay_b == ("refused", 403) and replay_cross == ("refused", 403) and replay_a == ("refused", 403)
    assert rejected_b == {"token": 1}
    assert "stream token already used" in b.log_path.read_text()


async def lag_count(client: httpx.AsyncClient, server: ServerProcess) -> float:
    text = (await client.get(f"{server.base_url}/metrics", headers=AUTH)).text
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("callgate_event_loop_lag_seconds_count"))


async def test_serve_two_workers_share_metrics_and_drain_together(tmp_path):
    scratch = tmp_path / "scratch"  # the server's TMPDIR: where it makes its metrics folder
    scratch.mkdir()
    server = ServerProcess(tmp_path, workers=2, TMPDIR=str(scratch))
    await asyncio.to_thread(server.start)
    rate = 0.0
    try:
        async with httpx.AsyncClient() as client:
            # One event loop ticks at most ten times a second; a summed scrape that grows faster than
            # 13 a second over 1.5 s holds both workers' ticks. The second worker may still be starting
            # (its decoder processes) when the first answers /readyz, so watch for up to 30 s.
            history: list[tuple[float, float]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while loop.time() < deadline and rate <= 13:
                t1, c1 = loop.time(), await lag_count(client, server)
                rate = max([rate] + [(c1 - c0) / (t1 - t0) for t0, c0 in history if t1 - t0 >= 1.5])
                history.append((t1, c1))
                await asyncio.sleep(0.25)
        server.signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 30)
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert rate > 13, f"the scrape grew {rate:.1f} ticks/s: one worker's loop only"
    assert code == 0 and log.count("drained: no live calls left") == 2, server.log_tail()
    assert list(scratch.glob("callgate-metrics-*")) == [], "the metrics folder serve made outlived it"
