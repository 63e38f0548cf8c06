"""The Twilio REST stand-in: paths, Basic auth, 20404, and the real clients (twilio, Pipecat) against it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pipecat.serializers.twilio import TwilioFrameSerializer
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from simulator.phone import PhoneCall, simulate_call
from simulator.rest import RestStandIn
from tests.simulator.conftest import Session, tone

ACCOUNT, TOKEN = "AC" + "a" * 32, "tok3n"


def calls_url(rest: RestStandIn, sid: str | None = None, account: str = ACCOUNT) -> str:
    tail = f"/Calls/{sid}.json" if sid else "/Calls.json"
    return f"{rest.base_url}/2010-04-01/Accounts/{account}{tail}"


async def test_basic_auth_404_and_create():
    created: list[dict] = []

    async def on_create(call: dict) -> None:
        created.append(call)

    async with (
        RestStandIn(account_sid=ACCOUNT, auth_token=TOKEN, on_create=on_create) as rest,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        unknown = calls_url(rest, "CA" + "0" * 32)
        r = await http.post(unknown, data={"Status": "completed"})
        assert r.status_code == 401 and r.json()["code"] == 20003 and "Basic" in r.headers["www-authenticate"]
        r = await http.post(unknown, data={"Status": "completed"}, auth=(ACCOUNT, "wrong"))
        assert r.status_code == 401
        r = await http.post(unknown, data={"Status": "completed"}, auth=(ACCOUNT, TOKEN))
        assert r.status_code == 404
        body = r.json()
        assert body["code"] == 20404 and body["status"] == 404 and "was not found" in body["message"]
        r = await http.post(
            calls_url(rest, "CA" + "0" * 32, account="AC" + "b" * 32),
            data={"Status": "completed"},
            auth=(ACCOUNT, TOKEN),
        )
        assert r.status_code == 404

        form = {
            "To": "+15551112222",
            "From": "+15005550006",
            "Url": "http://127.0.0.1:1/twiml?workflow=x",
            "MachineDetection": "Enable",
        }
        r = await http.post(calls_url(rest), data=form, auth=(ACCOUNT, TOKEN))
        assert r.status_code == 201
        res = r.json()
        assert res["sid"].startswith("CA") and len(res["sid"]) == 34 and res["status"] == "queued"
        assert res["to"] == form["To"] and res["from"] == form["From"] and res["account_sid"] == ACCOUNT
        assert rest.calls_created == [{"sid": res["sid"], "account_sid": ACCOUNT, **form}]
        await asyncio.sleep(0.01)
        assert created == rest.calls_created
        r = await http.post(calls_url(rest), data={"From": "+1"}, auth=(ACCOUNT, TOKEN))
        assert r.status_code == 400 and r.json()["code"] == 21201
        r = await http.get(calls_url(rest, res["sid"]), auth=(ACCOUNT, TOKEN))
        assert r.json()["status"] == "queued"
        assert [q["path"] for q in rest.requests].count(f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json") == 2

    async with (
        RestStandIn() as open_rest,
        httpx.AsyncClient(trust_env=False) as http,
    ):  # no credentials: anything goes
        r = await http.post(
            calls_url(open_rest), data={"To": "+1", "From": "+2", "Twiml": "<Response/>"}, auth=("x", "y")
        )
        assert r.status_code == 201


async def test_twilio_client_and_pipecat_hang_up_a_live_call(fake_server):
    """The real clients the server uses, pointed at the stand-in, hang up simulated calls."""

    async def wait(session: Session) -> None:
        await session.wait_event("stop")

    async with RestStandIn(account_sid=ACCOUNT, auth_token=TOKEN) as rest:
        server = await fake_server(wait)

        # twilio's client (sync, in a thread, as a server would call it from an executor)
        call = PhoneCall(tone(100), server.url, speed=5.0, tail_secs=10, account_sid=ACCOUNT, rest=rest)
        task = asyncio.create_task(call.run())
        await asyncio.wait_for(call.started.wait(), 5)
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = rest.base_url
        res = await asyncio.to_thread(lambda: client.calls(call.call_sid).update(status="completed"))
        assert res.status == "completed" and res.sid == call.call_sid
        report = await task
        assert report.summary["ended_by"] == "hangup" and report.of("hangup")[0]["by"] == "rest"
        with pytest.raises(TwilioRestException) as err:
            await asyncio.to_thread(lambda: client.calls(call.call_sid).update(status="completed"))
        assert err.value.code == 20404
        async_client = Client(ACCOUNT, TOKEN, http_client=AsyncTwilioHttpClient())  # what callgate/edge/twilio_control.py uses
        async_client.api.base_url = rest.base_url
        with pytest.raises(TwilioRestException) as err:
            await async_client.calls(call.call_sid).update_async(status="completed")
        assert err.value.code == 20404
        await async_client.http_client.close()

        # Pipecat's TwilioFrameSerializer auto hang-up with base_url
        call = PhoneCall(tone(100), server.url, speed=5.0, tail_secs=10, account_sid=ACCOUNT, rest=rest)
        task = asyncio.create_task(call.run())
        await asyncio.wait_for(call.started.wait(), 5)
        serializer = TwilioFrameSerializer(
            call.stream_sid,
            call_sid=call.call_sid,
            account_sid=ACCOUNT,
            auth_token=TOKEN,
            base_url=rest.base_url,
        )
        await serializer._hang_up_call()
        report = await task
        assert report.summary["ended_by"] == "hangup" and report.summary["stop_sent"]


async def test_concurrent_calls_on_one_stand_in(fake_server):
    async def hang_up_after_five_frames(session: Session) -> None:
        await session.wait_event("media", lambda m: m["media"]["chunk"] == "5")
        assert (await session.hangup()).status_code == 200
        await session.wait_event("stop")

    async with RestStandIn() as rest:
        server = await fake_server(hang_up_after_five_frames, rest_url=rest.base_url)
        reports = await asyncio.gather(
            *(simulate_call(tone(100), server.url, speed=5.0, tail_secs=10, rest=rest) for _ in range(3))
        )
        await server.scripts_done()
    assert server.script_error is None
    assert {r.summary["ended_by"] for r in reports} == {"hangup"}
    assert len({r.summary["call_sid"] for r in reports}) == 3
    assert all(r.summary["hangup_t_ms"] >= 100 for r in reports)
