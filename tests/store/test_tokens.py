"""The database-backed Stream-token claim: once only, atomically, on both backends."""

from __future__ import annotations

import asyncio
import time

from callgate.store import DbTokenStore


async def test_a_nonce_is_claimed_once(store):
    tokens = DbTokenStore(store.engine)
    expires = time.time() + 60
    assert await tokens.claim("nonce-a", expires) is True
    assert await tokens.claim("nonce-a", expires) is False
    assert await tokens.claim("nonce-b", expires) is True


async def test_concurrent_claims_of_one_nonce_have_one_winner(store):
    # Two stores = two connection pools, like two worker processes.
    other = DbTokenStore(type(store)(store.url).engine)
    tokens = DbTokenStore(store.engine)
    expires = time.time() + 60
    results = await asyncio.gather(
        *[(tokens if i % 2 else other).claim("contested", expires) for i in range(20)]
    )
    assert sorted(results) == [False] * 19 + [True]
    await other.engine.dispose()


async def test_expired_claims_are_purged(store):
    tokens = DbTokenStore(store.engine)
    assert await tokens.claim("old", time.time() - 1)
    tokens._next_purge = 0  # the next claim purges
    assert await tokens.claim("new", time.time() + 60)
    assert await tokens.claim("old", time.time() + 60) is True  # its row was gone


async def test_claim_token_hashes_the_whole_token(store):
    tokens = DbTokenStore(store.engine)
    assert await tokens.claim_token("some.signed.token", 60)
    assert not await tokens.claim_token("some.signed.token", 60)


async def test_fallback_store_keeps_calls_going_through_a_database_outage():
    from callgate.store import CallStore, FallbackTokenStore

    dead = CallStore("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    fallbacks = []
    tokens = FallbackTokenStore(DbTokenStore(dead.engine), on_fallback=lambda: fallbacks.append(1))
    expires = time.time() + 60
    assert await tokens.claim("n1", expires) is True  # the database cannot be asked: this process decides
    assert await tokens.claim("n1", expires) is False  # ...and still refuses a second use
    assert len(fallbacks) == 1
    await dead.engine.dispose()
