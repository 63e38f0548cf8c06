"""`kill -9` of a server in the middle of ten live calls loses at most the last second of their records.

The evidence is taken from the phone's side: when a simulated phone starts hearing the voicemail
message, the server has already recorded `beep_end` and `play_message` for that call. Every call whose
message was heard more than a second before the kill must have those events (and its AMD verdict and
call row) in the database afterwards; a restarted server reads the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import httpx

from callgate.audio import save_wav, to_int16
from callgate.store import CallStore
from callgate.synth import make_voicemail_greeting, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN
from tests.server.processes import ServerProcess

N_CALLS = 10
STAGGER_SECS = 0.5
KILL_WHEN_HEARD = 4  # kill once this many calls heard their message more than 1.3 s ago
SLACK_SECS = 0.1  # the phone hears the message a moment after the server recorded it; no more is allowed



async def test_sigkill_mid_calls_loses_at_most_the_last_second(tmp_path, database_url):
    greeting = make_voicemail_greeting(
        "Hi, you have reached Sam. Please leave a message after the tone.", beep_hz=850, beep_secs=0.5
    )
    save_wav(tmp_path / "messages" / "m.wav", to_int16(telephone_channel(speech("Please call us back soon."))))
    heard_at: dict[int, float] = {}
    sids: dict[int, str] = {}

    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = ServerProcess(tmp_path, TWILIO_API_BASE_URL=rest.base_url, DATABASE_URL=database_url)
        await asyncio.to_thread(server.start)

        async def one_call(i: int):
            await asyncio.sleep(i * STAGGER_SECS)

            def sink(ev):
                if ev["event"] == "media_start" and i not in heard_at:
                    heard_at[i] = time.time()

            report = await simulate_call(
                to_int16(greeting.audio), f"{server.base_url}/twiml", speed=1.0, auth_token=AUTH_TOKEN,
                account_sid=ACCOUNT_SID, params={"message": "m.wav"}, rest=rest, tail_secs=5, on_event=sink,
            )
            sids[i] = report.summary.get("call_sid")
            return report

        try:
            calls = [asyncio.create_task(one_call(i)) for i in range(N_CALLS)]
            deadline = time.monotonic() + 60
            while sum(time.time() - t > 1.3 for t in heard_at.values()) < KILL_WHEN_HEARD:
                assert time.monotonic() < deadline, f"calls never got their message: {server.log_tail()}"
                await asyncio.sleep(0.02)
            server.signal(signal.SIGKILL)
            killed_at = time.time()
            await asyncio.to_thread(server.proc.wait, 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        finally:
            server.stop()

    store = CallStore(database_url)
    try:
        rows = {c["call_sid"]: c for c in await store.list_calls(limit=100)}
        must_have = [i for i, t in heard_at.items() if killed_at - t > 1.0 + SLACK_SECS]
        newest = 0.0
        for i in range(N_CALLS):
            call = await store.get_call(sids[i]) if sids.get(i) else None
            if call:
                newest = max([newest, *(e["at"] for e in call["events"])])
            if i in must_have:
                assert call is not None, f"call {i} lost"
                names = [e["event"] for e in call["events"]]
                assert {"amd", "beep", "beep_end", "play_message"} <= set(names), names
                assert call["message_started_ms"] and call["started_at"]
    finally:
        await store.engine.dispose()
    print(
        f"{len(heard_at)} of {N_CALLS} calls had started their message at the kill; {len(must_have)} of them more "
        f"than 1 s before it, all fully recorded; {len(rows)} call rows; newest stored event "
        f"{(killed_at - newest) * 1000:.0f} ms before the kill"
    )
    assert len(must_have) >= KILL_WHEN_HEARD
    assert len(heard_at) < N_CALLS, "the kill came after every call had its message"
    assert killed_at - newest < 1.0

    # The database survives the crash: a new server starts on it and serves the records.
    again = ServerProcess(tmp_path, DATABASE_URL=database_url)
    await asyncio.to_thread(again.start)
    try:
        listing = httpx.get(f"{again.base_url}/calls", params={"limit": 100}, headers=AUTH).json()
        assert {c["call_sid"] for c in listing["calls"]} == set(rows)
    finally:
        again.stop()
