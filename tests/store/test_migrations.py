"""Alembic migrations: they build exactly the schema the code uses, and every worker may run them at once."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from callgate.store import CallStore
from callgate.store.schema import metadata


async def test_migrated_schema_matches_the_code(db_url):
    store = CallStore(db_url)
    await store.start()
    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert diff == []
        assert {"calls", "call_events", "transcripts", "campaigns", "campaign_entries", "used_stream_tokens"} <= tables
    finally:
        await store.close()


async def test_several_processes_can_migrate_one_database_at_once(db_url):
    stores = [CallStore(db_url) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))  # all race for the first upgrade
    stores[0].update_call("CA1", outcome="x")
    assert await stores[0].flush()
    assert (await stores[3].get_call("CA1"))["outcome"] == "x"
    await asyncio.gather(*(s.close() for s in stores))
