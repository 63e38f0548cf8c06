"""The database goes down in the middle of calls: the calls go on, records queue (counted in /metrics),
GET /calls/{sid} answers from memory, and everything lands once the database is back."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from callgate.audio import save_wav, to_int16
from callgate.synth import make_voicemail_greeting, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN, FAST_STREAM, wait_until
from tests.store.pg import PgServer, find_pg_bin


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", headers=AUTH).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


async def test_calls_survive_a_database_outage_and_records_catch_up(server_factory, tmp_path):
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: run scripts/system_deps.sh")
    pg = await asyncio.to_thread(PgServer(bin_dir).start)
    try:
        url = await pg.create_database()
        greeting = make_voicemail_greeting("Hi, you have reached Sam. Please leave a message after the tone.",
                                           beep_hz=850, beep_secs=0.5)
        save_wav(tmp_path / "messages" / "m.wav", to_int16(telephone_channel(speech("Call us back."))))
        async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
            server = server_factory(twilio_api_base_url=rest.base_url, database_url=url, token_store_path=None,
                                    **FAST_STREAM)

            async def call():
                return await simulate_call(
                    to_int16(greeting.audio), f"{server.base_url}/twiml", speed=2.0, auth_token=AUTH_TOKEN,
                    account_sid=ACCOUNT_SID, params={"message": "m.wav"}, rest=rest,
                )

            before = asyncio.create_task(call())
            await wait_until(lambda: server.state.active, what="the first call to start")
            await asyncio.to_thread(pg.kill)  # the database is gone mid-call
            during = asyncio.create_task(call())  # a new call while it is down (token claim falls back)
            reports = await asyncio.gather(before, during)
            for r in reports:
                assert r.summary["ended_by"] == "hangup" and r.of("mark")[-1]["played"], r.summary
            sids = [r.summary["call_sid"] for r in reports]
            await wait_until(lambda: all(s in server.state.finished for s in sids), what="both calls to end")
            await wait_until(lambda: server.state.store.stats.db_errors >= 2, what="failed writes")
            queued = metric(server, "callgate_db_queue_depth")
            errors = metric(server, "callgate_db_errors_total")
            fallback = httpx.get(f"{server.base_url}/calls/{sids[1]}", headers=AUTH)
            assert fallback.status_code == 200 and fallback.json()["outcome"] == "message_played"
            assert httpx.get(f"{server.base_url}/calls", headers=AUTH).status_code == 503

            await asyncio.to_thread(pg.start)
            await wait_until(lambda: server.state.store.depth == 0, timeout=20, what="the queue to drain")
            stored = [httpx.get(f"{server.base_url}/calls/{s}", headers=AUTH).json() for s in sids]
        print(f"while down: {queued:.0f} records queued, {errors:.0f} failed batches; all written once it was back")
        assert queued > 0 and errors >= 1
        for call in stored:
            assert call["outcome"] == "message_played" and call["beep"] and "play_message" in {
                e["event"] for e in call["events"]}
        assert metric(server, "callgate_db_dropped_total") == 0
    finally:
        await asyncio.to_thread(pg.stop)
