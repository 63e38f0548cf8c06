"""Store tests run on both backends: a SQLite file, and a real PostgreSQL started by the suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callgate.store import CallStore
from tests.store.pg import shared_pg_server

PG_MISSING = "PostgreSQL binaries (initdb, pg_ctl) are not installed: run scripts/system_deps.sh"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}"
    server = shared_pg_server()
    if server is None:
        pytest.skip(PG_MISSING)
    return await server.create_database()


@pytest.fixture
async def store(db_url) -> AsyncIterator[CallStore]:
    s = CallStore(db_url, flush_secs=0.05)
    await s.start()
    yield s
    await s.close()
