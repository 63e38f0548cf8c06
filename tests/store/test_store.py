"""CallStore on SQLite and on a real PostgreSQL: queued writes, flush cadence, reads, outages."""

from __future__ import annotations

import asyncio
import time

import pytest

from callgate.store import CallStore
from tests.store.pg import PgServer, find_pg_bin


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_call_record_round_trip_with_events_and_transcript(store):
    store.update_call("CA1", workflow="agent", agent="sales", direction="outbound-api", from_number="+15550001111",
                      to_number="+15552223333", status="in-progress", started_at=100.0)
    store.add_event("CA1", 0, {"event": "speech_start", "t_ms": 120})
    store.add_event("CA1", 1, {"event": "amd", "t_ms": 900, "label": "human", "confidence": 0.97,
                               "detector": "human_fast"})
    store.add_transcript("CA1", 1, "caller", "Hello?", start_ms=120, end_ms=600)
    store.add_transcript("CA1", 1, "bot", "Hi, this is Ana from Acme.", start_ms=1100, end_ms=2900,
                         latency_ms=480.0, model="stand-in")
    store.update_call("CA1", amd_label="human", amd_confidence=0.97, amd_detector="human_fast",
                      amd_latency_ms=900.0, outcome="agent_done", status="completed", agent_turns=1,
                      counters={"media": 150, "gaps": 0})
    assert await store.flush()
    call = await store.get_call("CA1")
    assert call["workflow"] == "agent" and call["agent"] == "sales" and call["from_number"] == "+15550001111"
    assert call["outcome"] == "agent_done" and call["status"] == "completed"  # later update wins
    assert call["started_at"] == 100.0  # earlier fields survive later partial updates
    assert call["amd_confidence"] == pytest.approx(0.97) and call["counters"] == {"media": 150, "gaps": 0}
    assert [e["event"] for e in call["events"]] == ["speech_start", "amd"]
    assert call["events"][1]["label"] == "human" and call["events"][1]["t_ms"] == 900
    assert [(t["role"], t["text"]) for t in call["transcript"]] == [
        ("caller", "Hello?"), ("bot", "Hi, this is Ana from Acme.")]
    assert call["transcript"][1]["latency_ms"] == 480.0 and call["transcript"][1]["model"] == "stand-in"
    assert await store.get_call("CAnope") is None


async def test_created_at_is_the_first_write_and_never_moves(store):
    store.update_call("CA2", status="webhook")
    assert await store.flush()
    first = (await store.get_call("CA2"))["created_at"]
    await asyncio.sleep(0.02)
    store.update_call("CA2", status="completed")
    assert await store.flush()
    call = await store.get_call("CA2")
    assert call["created_at"] == first and call["updated_at"] > first


async def test_listing_filters_by_since_outcome_and_campaign(store):
    for i, (outcome, campaign) in enumerate(
        [("message_played", "c1"), ("human", "c1"), ("message_played", "c2"), ("busy", None)]
    ):
        store.update_call(f"CA{i}", outcome=outcome, campaign_id=campaign)
        assert await store.flush()
        await asyncio.sleep(0.01)
    everything = await store.list_calls()
    assert [c["call_sid"] for c in everything] == ["CA3", "CA2", "CA1", "CA0"]  # newest first
    assert {c["call_sid"] for c in await store.list_calls(outcome="message_played")} == {"CA0", "CA2"}
    assert {c["call_sid"] for c in await store.list_calls(campaign="c1")} == {"CA0", "CA1"}
    since = everything[1]["created_at"]
    assert {c["call_sid"] for c in await store.list_calls(since=since)} == {"CA2", "CA3"}
    assert [c["call_sid"] for c in await store.list_calls(limit=1, offset=1)] == ["CA2"]


async def test_writer_flushes_within_a_second_without_being_asked(db_url):
    store = CallStore(db_url, flush_secs=1.0)
    await store.start()
    reader = CallStore(db_url)
    try:
        t0 = time.monotonic()
        store.update_call("CAlive", status="in-progress")
        store.add_event("CAlive", 0, {"event": "beep", "t_ms": 10})
        assert store.depth == 2  # queued, nothing waited on the database

        async def visible() -> bool:
            call = await reader.get_call("CAlive")
            return call is not None and len(call["events"]) == 1

        await wait_for(visible, timeout=3)
        elapsed = time.monotonic() - t0
        print(f"record visible to another connection after {elapsed * 1000:.0f} ms")
        assert elapsed < 1.3
    finally:
        await store.close()
        await reader.engine.dispose()


async def test_unknown_columns_and_roles_are_refused(store):
    with pytest.raises(ValueError, match="unknown call columns"):
        store.update_call("CA1", colour="blue")
    with pytest.raises(ValueError, match="role"):
        store.add_transcript("CA1", 1, "narrator", "...")


async def test_postgres_outage_queues_records_and_the_writer_catches_up():
    """The database goes away mid-run: writes keep returning at once, errors are counted, records are
    kept, and everything lands once it is back."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: run scripts/system_deps.sh")
    pg = PgServer(bin_dir).start()
    try:
        url = await pg.create_database()
        store = CallStore(url, flush_secs=0.05)
        await store.start()
        store.update_call("CAbefore", outcome="human")
        assert await store.flush()

        await asyncio.to_thread(pg.kill)
        t0 = time.perf_counter()
        for i in range(200):
            store.update_call(f"CAdown{i}", status="in-progress")
            store.add_event(f"CAdown{i}", 0, {"event": "speech_start", "t_ms": i})
        enqueue_ms = (time.perf_counter() - t0) * 1000
        await wait_for(lambda: _true_after(store.stats.db_errors >= 2), timeout=10)
        assert store.depth == 400
        print(f"400 records queued in {enqueue_ms:.1f} ms while down; db_errors={store.stats.db_errors}")

        await asyncio.to_thread(pg.start)

        async def drained() -> bool:
            return store.depth == 0

        await wait_for(drained, timeout=15)
        rows = await store.list_calls(limit=1000)
        assert len(rows) == 201
        assert len((await store.get_call("CAdown199"))["events"]) == 1
        await store.close()
    finally:
        await asyncio.to_thread(pg.stop)


async def _true_after(value: bool) -> bool:
    return value


async def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path):
    store = CallStore("postgresql+asyncpg://nobody@127.0.0.1:9/none", flush_secs=0.05, queue_max=100)
    await store.start(run_migrations=False)
    try:
        for i in range(150):
            store.add_event("CA1", i, {"event": "x", "t_ms": i})
        assert store.depth == 100 and store.stats.dropped == 50
        await wait_for(lambda: _true_after(store.stats.db_errors >= 1), timeout=10)
        assert store.depth == 100  # failed batches go back to the queue, nothing is lost silently
    finally:
        await store.close(timeout=2)


async def test_values_longer_than_their_columns_are_cut_instead_of_refused(store):
    """A SIP caller's From (sip:alice.smith@example.sip.twilio.com) is longer than the 32-character
    column: PostgreSQL would refuse the whole batch. The store fits it to the column."""
    sip = "sip:alice.smith.from.the.front.desk@example.sip.twilio.com"
    store.update_call("CAsip", from_number=sip, agent="a" * 200, twilio_duration_secs=10**12)
    store.add_event("CAsip", 2**40, {"event": "e" * 100, "t_ms": 1.0})
    assert await store.flush()
    call = await store.get_call("CAsip")
    assert call["from_number"] == sip[:32] and call["agent"] == "a" * 64
    assert call["twilio_duration_secs"] == 2**31 - 1
    assert call["events"][0]["event"] == "e" * 48
    assert store.stats.refused == 0


async def test_a_record_the_database_refuses_is_dropped_alone_and_every_other_call_is_written(store):
    """One bad record (here a transcript row without text, which NOT NULL refuses) must not hold every
    other call's records in the queue forever: the batch is split, the bad record dropped and counted."""
    store.update_call("CAone", outcome="human")
    store.add_event("CAone", 0, {"event": "speech_start", "t_ms": 10.0})
    store.add_transcript("CAbad", 1, "caller", None)  # type: ignore[arg-type]
    store.update_call("CAtwo", outcome="machine")
    store.add_transcript("CAtwo", 1, "caller", "hello")
    assert await store.flush()
    assert store.depth == 0 and store.stats.refused == 1 and store.stats.db_errors >= 1
    one, two = await store.get_call("CAone"), await store.get_call("CAtwo")
    assert one["outcome"] == "human" and [e["event"] for e in one["events"]] == ["speech_start"]
    assert two["outcome"] == "machine" and [t["text"] for t in two["transcript"]] == ["hello"]
    store.update_call("CAthree", outcome="human")  # the writer carries on as usual
    assert await store.flush() and (await store.get_call("CAthree"))["outcome"] == "human"
