"""The simulated phone against a fake server over real sockets: pacing, marks, clear, hangup, errors."""

from __future__ import annotations

import asyncio
import base64
import re

import httpx
import pytest

from callgate.audio import pcm_to_ulaw
from simulator.phone import CallReport, PhoneCall, RejectedCall, StreamClient, simulate_call, webhook_url
from simulator.rest import RestStandIn
from tests.simulator.conftest import STREAM_TOKEN, Session, tone

SID = re.compile(r"^(CA|AC|MZ)[0-9a-f]{32}$")


@pytest.mark.parametrize("speed", [1.0, 4.0, None])
async def test_stream_pacing_timestamps_and_sequence(fake_server, speed):
    server = await fake_server()
    audio = tone(400)  # 20 frames, then 10 frames of silence tail
    report = await simulate_call(audio, server.url, speed=speed, tail_secs=0.2)

    s = report.summary
    assert s["ended_by"] == "audio_end" and s["frames_sent"] == 30 and s["stop_sent"]
    session = server.session
    await asyncio.wait_for(session.closed.wait(), 2)
    msgs = [m for _, m in session.messages]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert SID.match(start["streamSid"]) and start["streamSid"] == s["stream_sid"]
    assert start["start"]["callSid"] == s["call_sid"] and start["start"]["accountSid"] == s["account_sid"]
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["customParameters"] == {"token": STREAM_TOKEN, "workflow": "test"}

    media = msgs[2:-1]
    assert len(media) == 30
    ulaw = pcm_to_ulaw(audio.tobytes())
    for k, m in enumerate(media):
        assert m["event"] == "media" and m["streamSid"] == s["stream_sid"]
        assert m["sequenceNumber"] == str(k + 2)
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(k + 1) and m["media"]["timestamp"] == str(k * 20)
        payload = base64.b64decode(m["media"]["payload"])
        assert payload == (ulaw[k * 160 : (k + 1) * 160] if k < 20 else b"\xff" * 160)
    stop = msgs[-1]
    assert stop == {
        "event": "stop",
        "sequenceNumber": "32",
        "streamSid": s["stream_sid"],
        "stop": {"accountSid": s["account_sid"], "callSid": s["call_sid"]},
    }

    arrivals = [t for t, m in session.messages if isinstance(m, dict) and m.get("event") == "media"]
    span_ms = (arrivals[-1] - arrivals[0]) * 1000
    if speed is None:
        assert span_ms < 400  # far faster than the 580 ms of audio
    else:
        period = 20 / speed
        # frame k is sent at t0 + k * period, never before: arrival - k * period is t0 plus lateness, so
        # its spread bounds the jitter (a burst or a drifting timer would spread it by up to 29 periods)
        offsets = [(t - arrivals[0]) * 1000 - k * period for k, t in enumerate(arrivals)]
        assert max(offsets) - min(offsets) < 100, offsets
        assert span_ms >= 29 * period * 0.75


async def test_marks_clear_and_rest_hangup(fake_server):
    """Marks echo when their audio would have played (call time), clear cancels, REST hangup ends with stop."""
    seen: dict[str, object] = {}

    async def script(session: Session) -> None:
        await session.wait_event("media", lambda m: m["media"]["chunk"] == "3")
        await session.send_media(1000)  # one 8000-byte message: 1 s
        await session.send_mark("a")
        seen["echo_a"] = await session.wait_event("mark")
        await session.send_media(2000)
        await session.send_mark("b")
        await session.wait_event("media")
        await session.wait_event("media")
        await session.send_clear()
        seen["echo_b"] = await session.wait_event("mark")
        await session.send_mark("c")  # nothing buffered: echoed at once
        seen["echo_c"] = await session.wait_event("mark")
        await session.send_media(10000)
        await session.send_mark("d")
        resp = await session.hangup()
        seen["hangup"] = (resp.status_code, resp.json())
        seen["stop"] = await session.wait_event("stop")
        again = await session.hangup()
        seen["again"] = (again.status_code, again.json())

    async with RestStandIn() as rest:
        server = await fake_server(script, rest_url=rest.base_url)
        report = await simulate_call(tone(1000), server.url, speed=5.0, tail_secs=20, rest=rest)
        await server.scripts_done()
        assert rest.calls[report.summary["call_sid"]].status == "completed"
    assert server.script_error is None
    s = report.summary

    starts = report.of("media_start")
    marks = {m["name"]: m for m in report.of("mark")}
    # a: 1 s after playback began, in call time, played (queued well before that)
    assert marks["a"]["played"] is True
    assert marks["a"]["t_ms"] == starts[0]["t_ms"] + 1000 and marks["a"]["queued_t_ms"] < marks["a"]["t_ms"]
    # ... and the echo reached the server only after the frames that carry the call past that time
    session = server.session
    before_echo = []
    for _, m in session.messages:
        if m is seen["echo_a"]:
            break
        if isinstance(m, dict) and m.get("event") == "media":
            before_echo.append(int(m["media"]["chunk"]))
    assert before_echo[-1] * 20 >= marks["a"]["t_ms"]
    assert seen["echo_a"]["mark"] == {"name": "a"} and seen["echo_a"]["streamSid"] == s["stream_sid"]
    # b: cancelled by clear, echoed at once, reported unplayed
    clear = report.of("clear")[0]
    assert clear["cancelled_marks"] == ["b"] and 0 < clear["dropped_ms"] <= 2000
    assert marks["b"]["played"] is False and marks["b"]["t_ms"] == clear["t_ms"]
    assert seen["echo_b"]["mark"]["name"] == "b"
    # c: nothing buffered -> echoed at once, played
    assert marks["c"]["played"] is True and marks["c"]["t_ms"] == marks["c"]["queued_t_ms"]
    # d: still buffered at hangup: never echoed
    assert "d" not in marks and [m for m in s["marks"] if m["name"] == "d"][0]["echoed"] is False
    assert len(starts) == 3  # a's audio, b's audio, d's audio each started from idle

    hangup = report.of("hangup")[0]
    assert hangup["by"] == "rest" and hangup["unplayed_ms"] > 0
    assert s["ended_by"] == "hangup" and s["hangup_t_ms"] == hangup["t_ms"] and s["stop_sent"]
    assert seen["hangup"][0] == 200 and seen["hangup"][1]["status"] == "completed"
    assert seen["hangup"][1]["sid"] == s["call_sid"]
    assert seen["again"] == (404, seen["again"][1]) and seen["again"][1]["code"] == 20404
    stop = seen["stop"]
    assert stop["stop"] == {"accountSid": s["account_sid"], "callSid": s["call_sid"]}
    last_seq = max(
        int(m["sequenceNumber"]) for _, m in session.messages if isinstance(m, dict) and "sequenceNumber" in m
    )
    assert int(stop["sequenceNumber"]) == last_seq
    assert s["played_ms"] == s["received_ms"] - s["cleared_ms"] - s["unplayed_ms"]
    assert s["received_ms"] == 1000 + 2000 + 10000 and s["first_media_t_ms"] == starts[0]["t_ms"]
    assert s["odd_sized_media"] == 0 and s["marks_received"] == 4 and s["clears_received"] == 1


async def test_signed_webhook_and_websocket(fake_server):
    token, account = "s3cret", "AC" + "1" * 32
    server = await fake_server(auth_token=token)
    params = {"workflow": "voicemail_drop", "message": "Hi, call me back & soon"}
    report = await simulate_call(
        tone(40), server.url, speed=None, tail_secs=0, auth_token=token, account_sid=account, params=params
    )
    assert report.ok and report.summary["ended_by"] == "audio_end"
    hook = server.webhooks[0]
    assert hook["valid"] is True and server.ws_signature_valid is True
    assert hook["query"] == params and hook["url"].startswith(f"{server.url}/twiml?")
    form = hook["form"]
    assert SID.match(form["CallSid"]) and form["AccountSid"] == account
    assert (
        form["CallStatus"] == "in-progress"
        and form["Direction"] == "outbound-api"
        and form["ApiVersion"] == "2010-04-01"
    )
    assert form["From"] and form["To"]
    assert server.session.start["start"]["callSid"] == form["CallSid"]


async def test_bad_signature_webhook_rejected(fake_server):
    server = await fake_server(auth_token="right")
    report = await simulate_call(tone(40), server.url, speed=None, tail_secs=0, auth_token="wrong")
    assert server.webhooks[0]["valid"] is False
    s = report.summary
    assert not report.ok and s["ended_by"] == "rejected" and s["webhook_status"] == 403
    assert "HTTP 403" in report.error and report.of("error")


async def test_websocket_rejected_and_server_close(fake_server):
    server = await fake_server(ws_reject=True)
    report = await simulate_call(tone(40), server.url, speed=None, tail_secs=0)
    assert report.summary["ended_by"] == "rejected" and "WebSocket" in report.error and "403" in report.error

    async def close_1008(session: Session) -> None:
        await session.wait_event("media")
        await session.ws.close(code=1008, reason="policy")

    server = await fake_server(close_1008)
    report = await simulate_call(tone(200), server.url, speed=4.0, tail_secs=5)
    s = report.summary
    assert s["ended_by"] == "server_closed" and not s["stop_sent"]
    assert report.of("server_closed")[0]["code"] == 1008 and s["server_close_reason"] == "policy"
    assert s["frames_sent"] < 100


async def test_unreachable_server_and_bad_twiml(fake_server):
    report = await simulate_call(tone(40), "http://127.0.0.1:9", speed=None)
    assert report.summary["ended_by"] == "rejected" and "cannot reach" in report.error

    for twiml, why in [
        ("<Response><Start><Stream url='ws://x/y'/></Start></Response>", "<Start><Stream>"),
        ("<Response><Connect><Stream url='ws://x/y?t=1'/></Connect></Response>", "31920"),
        ("<Response><Hangup/></Response>", "<Hangup>"),
        ("not xml", "not XML"),
    ]:
        server = await fake_server(twiml=twiml)
        report = await simulate_call(tone(40), server.url, speed=None)
        assert report.summary["ended_by"] == "rejected" and why in report.error, report.error


async def test_update_twiml_ends_stream(fake_server):
    dial = "<Response><Dial>+15550001111</Dial></Response>"
    replies = []

    async def script(session: Session) -> None:
        await session.wait_event("media", lambda m: m["media"]["chunk"] == "5")
        replies.append(await session.rest({"Twiml": dial}))
        await session.wait_event("stop")

    async with RestStandIn() as rest:
        server = await fake_server(script, rest_url=rest.base_url)
        report = await simulate_call(tone(200), server.url, speed=5.0, tail_secs=5, rest=rest)
        await server.scripts_done()
        sid = report.summary["call_sid"]
        assert rest.calls[sid].status == "in-progress"  # bridged to the human now
        async with httpx.AsyncClient(trust_env=False) as http:
            url = f"{rest.base_url}/2010-04-01/Accounts/{report.summary['account_sid']}/Calls/{sid}.json"
            assert (await http.post(url, data={"Status": "completed"})).status_code == 200
            assert (await http.post(url, data={"Status": "completed"})).json()["code"] == 20404
    assert replies[0].status_code == 200
    update = report.of("update")[0]
    assert update["twiml"] == dial and update["t_ms"] >= 100
    assert report.summary["ended_by"] == "update" and report.summary["stop_sent"]
    assert report.summary["updates"][0]["twiml"] == dial


async def test_server_protocol_errors_are_counted(fake_server):
    async def script(session: Session) -> None:
        sid = session.stream_sid
        await session.send("{not json")
        await session.ws.send_bytes(b"\x00\x01")
        await session.send({"event": "playAudio", "streamSid": sid})
        await session.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": "////"}})
        await session.send({"event": "media", "streamSid": sid, "media": {"payload": "%%%"}})
        await session.send({"event": "mark", "streamSid": sid, "mark": {}})
        await session.send(
            {
                "event": "media",
                "streamSid": sid,
                "media": {"payload": base64.b64encode(b"\x55" * 100).decode()},
            }
        )
        await session.send_media(40)
        await session.wait_event("media")
        await session.ws.close(code=1000)

    server = await fake_server(script)
    report = await simulate_call(tone(100), server.url, speed=5.0, tail_secs=5)
    s = report.summary
    assert s["ended_by"] == "server_closed" and report.of("server_closed")[0]["code"] == 1000
    assert (s["bad_json"], s["binary_messages"], s["unknown_events"], s["wrong_stream_sid"]) == (1, 1, 1, 1)
    assert s["malformed_messages"] == 2 and s["odd_sized_media"] == 1
    assert s["media_chunks_received"] == 2 and s["media_bytes_received"] == 420
    assert report.received_ulaw == b"\x55" * 420


async def test_dtmf_and_raw_stream_client(fake_server):
    async def script(session: Session) -> None:
        await session.wait_event("dtmf")
        await session.wait_event("dtmf")

    server = await fake_server(script)
    call = PhoneCall(tone(100), server.url, speed=5.0, tail_secs=1, dtmf=[(60, "5")])
    task = asyncio.create_task(call.run())
    await asyncio.wait_for(call.started.wait(), 5)
    await call.send_dtmf("#")
    report: CallReport = await task
    digits = [m["dtmf"] for m in server.session.events("dtmf")]
    assert {"track": "inbound_track", "digit": "5"} in digits and {
        "track": "inbound_track",
        "digit": "#",
    } in digits
    assert report.summary["dtmf_sent"] == 2

    # raw client: things Twilio never sends, over a real socket
    server = await fake_server()
    client = await StreamClient.connect(server.http.ws_base_url + "/ws/raw")
    await client.send_connected()
    await client.send_media(b"\xff" * 160)  # media before start
    await client.send_start({"k": "v"})
    await client.send_raw("{broken")
    await client.send_raw(b"\x01\x02")
    await client.send_media(b"\xff" * 160, seq=99, chunk=7, timestamp=1234)  # gap
    await client.send_media(b"\xff" * 160, seq=99)  # duplicate
    await client.send_json({"event": "media"})
    await client.send_raw("x" * 2_000_000)  # oversize text frame
    await client.send_stop()
    await client.close()
    await asyncio.wait_for(server.session.closed.wait(), 5)
    got = [m for _, m in server.session.messages]
    assert got[1]["event"] == "media" and got[1]["sequenceNumber"] == "1" and got[1]["media"]["chunk"] == "1"
    assert got[2]["event"] == "start" and got[2]["sequenceNumber"] == "2"
    assert got[3] == "{broken" and got[4] == b"\x01\x02"
    assert (got[5]["sequenceNumber"], got[5]["media"]["chunk"], got[5]["media"]["timestamp"]) == (
        "99",
        "7",
        "1234",
    )
    assert got[6]["sequenceNumber"] == "99" and got[6]["media"]["chunk"] == "2"
    assert got[7] == {"event": "media"} and len(got[8]) == 2_000_000
    assert got[9]["event"] == "stop" and got[9]["sequenceNumber"] == "3"


def test_webhook_url():
    assert webhook_url("http://h:1") == "http://h:1/twiml"
    assert webhook_url("http://h:1/", {"workflow": "w"}) == "http://h:1/twiml?workflow=w"
    assert (
        webhook_url("https://h/hook?a=1&workflow=x", {"workflow": "y", "m": "a b"})
        == "https://h/hook?a=1&workflow=y&m=a+b"
    )


def test_webhook_url_with_a_port_out_of_range_or_a_broken_host_is_a_rejected_call():
    for url in ("http://127.0.0.1:99999", "http://h:abc", "http://[::1"):
        with pytest.raises(RejectedCall, match="server URL must be"):
            webhook_url(url)
