"""SIGTERM during live calls: `callgate serve` drains them, turns new calls away politely, fails /readyz
at once, and exits after the last call (a real process, a real signal, ten real-time simulated calls)."""

from __future__ import annotations

import asyncio
import signal
import time
import xml.etree.ElementTree as ET

import httpx
import pytest
from twilio.request_validator import RequestValidator

from callgate.audio import save_wav, to_int16
from callgate.store import CallStore
from callgate.synth import make_voicemail_greeting, speech, telephone_channel
from simulator.phone import new_sid, simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN
from tests.server.processes import ServerProcess

N_CALLS = 10


@pytest.fixture
def greeting_and_message(tmp_path):
    # A long greeting: all ten calls must be live at once, and a loaded CI machine brings ten streams up
    # over seconds (with a 5 s greeting, the first calls once hung up before the last were live).
    greeting = make_voicemail_greeting(
        "Hi, you have reached Sam Taylor at the Lakeview office. I am away from my desk right now. "
        "Please leave your name, your number and a short message after the tone.",
        beep_hz=850, beep_secs=0.5,
    )
    save_wav(tmp_path / "messages" / "m.wav", to_int16(telephone_channel(speech("Please call us back."))))
    return greeting, "m.wav"


def signed_webhook(base_url: str, params: dict[str, str]) -> httpx.Response:
    sig = RequestValidator(AUTH_TOKEN).compute_signature(f"{base_url}/twiml", params)
    return httpx.post(f"{base_url}/twiml", data=params, headers={"X-Twilio-Signature": sig}, timeout=5)


async def test_sigterm_drains_live_calls_refuses_new_ones_and_exits_after_the_last(tmp_path, greeting_and_message):
    greeting, message = greeting_and_message
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        # The test polls /stats while ten calls come up; on a loaded CI machine that can pass the default
        # 120/minute control-API limit, and a 429 is not what this test is about.
        server = ServerProcess(
            tmp_path, TWILIO_API_BASE_URL=rest.base_url, DRAIN_TIMEOUT_SECS="60", API_RATE_LIMIT="100/second"
        )
        await asyncio.to_thread(server.start)
        try:
            ended_at: list[float] = []

            async def one_call():
                report = await simulate_call(
                    to_int16(greeting.audio), f"{server.base_url}/twiml", speed=1.0, auth_token=AUTH_TOKEN,
                    account_sid=ACCOUNT_SID, params={"message": message}, rest=rest, tail_secs=15,
                )
                ended_at.append(time.monotonic())
                return report

            calls = [asyncio.create_task(one_call()) for _ in range(N_CALLS)]
            async with httpx.AsyncClient() as client:

                async def live_calls() -> int:
                    response = await client.get(f"{server.base_url}/stats", headers=AUTH)
                    assert response.status_code == 200, response.text
                    return response.json()["live_calls"]

                for _ in range(200):  # wait until all ten streams are live
                    if await live_calls() == N_CALLS:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the calls never all went live")

                server.signal(signal.SIGTERM)
                t_term = time.monotonic()
                ready = await client.get(f"{server.base_url}/readyz")
                readyz_after = time.monotonic() - t_term
                live_at_term = await live_calls()
                refused = await asyncio.to_thread(
                    signed_webhook, server.base_url, {"CallSid": new_sid("CA"), "AccountSid": ACCOUNT_SID}
                )
                metrics_during = (await client.get(f"{server.base_url}/metrics", headers=AUTH)).text

            reports = await asyncio.gather(*calls)
            last_call_end = max(ended_at)
            returncode = await asyncio.to_thread(server.proc.wait, 60)
            exited_at = time.monotonic()
        finally:
            server.stop()

    print(
        f"readyz failed {readyz_after * 1000:.0f} ms after SIGTERM with {live_at_term} calls live; "
        f"process exited {exited_at - last_call_end:.2f} s after the last call ended, "
        f"{exited_at - t_term:.1f} s after SIGTERM"
    )
    assert ready.status_code == 503 and readyz_after < 0.5
    assert live_at_term == N_CALLS
    root = ET.fromstring(refused.text)
    assert refused.status_code == 200 and [c.tag for c in root] == ["Say", "Hangup"], refused.text
    assert "callgate_draining 1.0" in metrics_during
    for r in reports:
        assert r.ok and r.summary["ended_by"] == "hangup", r.summary
        assert r.of("media_start") and r.of("mark")[-1]["played"] is True
    assert returncode == 0, server.log_tail()
    assert 0 <= exited_at - last_call_end < 5.0, server.log_tail()

    store = CallStore(server.env["DATABASE_URL"])
    try:
        rows = await store.list_calls(limit=100)
    finally:
        await store.engine.dispose()
    played = [c for c in rows if c["outcome"] == "message_played"]
    assert len(played) == N_CALLS, [(c["call_sid"], c["status"], c["outcome"]) for c in rows]
