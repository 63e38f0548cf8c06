"""Bring a database to the newest schema with Alembic, programmatically, at start-up.

Several worker processes may start at once against one database, so the upgrade runs under a lock:
PostgreSQL's advisory lock, or an exclusive file lock next to the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
PG_LOCK_KEY = 0x63616C6C  # "call": the advisory lock all callgate processes agree on


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite URL (None for other backends and in-memory databases)."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".migrate.lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade to head; safe to call from every worker at once."""
    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with _async_file_lock(path):
            async with engine.connect() as conn:
                await conn.run_sync(_upgrade)
                await conn.commit()
        return
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                await conn.commit()


@contextlib.asynccontextmanager
async def _async_file_lock(path: Path):
    lock = _file_lock(path)
    await asyncio.to_thread(lock.__enter__)  # flock may wait for another worker: not on the loop
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
