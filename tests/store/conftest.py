"""Store tests run on both backends: a SQLite file, and a real PostgreSQL started by the suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callgate.store import CallStore


@pytest.fixture
def db_url(database_url: str) -> str:
    """A fresh, empty database URL on each backend (tests/conftest.py's database_url)."""
    return database_url


@pytest.fixture
async def store(db_url) -> AsyncIterator[CallStore]:
    s = CallStore(db_url, flush_secs=0.05)
    await s.start()
    yield s
    await s.close()
