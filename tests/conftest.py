"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest

from tests.store.pg import shared_pg_server

PG_MISSING = "PostgreSQL binaries (initdb, pg_ctl) are not installed: run scripts/system_deps.sh"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path) -> str:
    """A fresh, empty database URL on each backend: a SQLite file, and a real PostgreSQL started by the suite."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}"
    server = shared_pg_server()
    if server is None:
        pytest.skip(PG_MISSING)
    return await server.create_database()
