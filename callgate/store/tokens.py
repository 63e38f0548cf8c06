"""Single use of Stream tokens across processes: a claimed nonce is a row in `used_stream_tokens`.

The in-process check (twiml/tokens.py) already refuses a token replayed against the same process;
with several workers (or hosts) a replay could reach another one, so every redeem also claims the
token's nonce here. The primary key makes the claim atomic on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from loguru import logger
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from callgate.store.schema import used_stream_tokens

PURGE_EVERY_SECS = 60.0


class TokenStoreUnavailable(Exception):
    """The database could not be asked; the caller decides whether to fail open or closed."""


class DbTokenStore:
    """`claim(nonce, expires_at) -> bool`: True the first time a nonce is claimed, False ever after
    (until it has expired and been purged)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._next_purge = 0.0

    async def claim(self, nonce: str, expires_at: float) -> bool:
        now = time.time()
        try:
            async with self.engine.begin() as conn:
                if now >= self._next_purge:
                    self._next_purge = now + PURGE_EVERY_SECS
                    await conn.execute(delete(used_stream_tokens).where(used_stream_tokens.c.expires_at < now))
                await conn.execute(
                    insert(used_stream_tokens).values(nonce=nonce[:128], expires_at=expires_at, claimed_at=now)
                )
            return True
        except IntegrityError:
            return False
        except Exception as e:  # connection refused, timeout, ...
            logger.warning(f"stream token store unreachable: {type(e).__name__}: {e}")
            raise TokenStoreUnavailable(str(e)) from e

    async def claim_token(self, token: str, ttl_secs: float) -> bool:
        """Claim a whole token string (its hash is the nonce): for callers that cannot see the nonce."""
        return await self.claim(hashlib.sha256(token.encode()).hexdigest(), time.time() + ttl_secs + 5)


class FallbackTokenStore:
    """The database store, and while the database cannot be asked, this process's memory.

    A database outage must not stop calls: the token is still HMAC-signed, bound to its call and
    expires within TOKEN_TTL_SECS, and this process still refuses a second use; only a replay against
    another worker during the outage would get through. `on_fallback` counts each such claim.
    """

    def __init__(self, primary: DbTokenStore, on_fallback: Callable[[], None] | None = None) -> None:
        self.primary = primary
        self._memory: dict[str, float] = {}
        self._on_fallback = on_fallback

    async def claim(self, nonce: str, expires_at: float) -> bool:
        now = time.time()
        if self._memory.get(nonce, 0.0) > now:
            return False
        try:
            return await self.primary.claim(nonce, expires_at)
        except TokenStoreUnavailable:
            if self._on_fallback:
                self._on_fallback()
            if len(self._memory) > 100_000:
                self._memory = {n: t for n, t in self._memory.items() if t > now}
            self._memory[nonce] = expires_at
            return True
