"""Alembic environment: migrations run on a connection the store hands over (see store/migrate.py).

`alembic -c callgate/store/alembic.ini upgrade head` also works from the command line; it then
connects with DATABASE_URL (async drivers are run through `run_sync`).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from callgate.store.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from callgate.settings import Settings

    asyncio.run(_run_from_url(config.get_main_option("sqlalchemy.url") or Settings().db_url))
