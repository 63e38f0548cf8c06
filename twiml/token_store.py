"""Where redeemed Stream-token nonces are remembered, so a token works once, across restarts and workers.

One small interface, `claim(nonce, expires_at) -> bool` (True the first time only), with two stores:
in memory (tests, one process) and a SQLite file (the default; every worker and every restart of the
server on this host shares it). The production database can replace it behind the same interface.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol


class UsedTokenStore(Protocol):
    async def claim(self, nonce: str, expires_at: float) -> bool:
        """Record `nonce` as used until `expires_at` (epoch s); False if it was already used."""
        ...


class MemoryTokenStore:
    """Per-process store: forgets on restart (use only where that is acceptable, e.g. tests)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._used: dict[str, float] = {}
        self._max = max_entries

    async def claim(self, nonce: str, expires_at: float) -> bool:
        now = time.time()
        if len(self._used) >= self._max:
            self._used = {n: t for n, t in self._used.items() if t > now}
        if self._used.get(nonce, 0.0) > now:
            return False
        self._used[nonce] = expires_at
        return True


class SqliteTokenStore:
    """A SQLite file; claims run in a worker thread (never on the event loop), one at a time per process."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # opened on first use, not at import or app creation
        self._claims = 0

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS used_stream_tokens (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def _claim(self, nonce: str, expires_at: float) -> bool:
        with self._lock:
            conn = self._connect()
            self._claims += 1
            if self._claims % 200 == 1:
                conn.execute("DELETE FROM used_stream_tokens WHERE expires_at < ?", (time.time(),))
            cursor = conn.execute(
                "INSERT OR IGNORE INTO used_stream_tokens (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at)
            )
            return cursor.rowcount == 1

    async def claim(self, nonce: str, expires_at: float) -> bool:
        return await asyncio.to_thread(self._claim, nonce, expires_at)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_token_store(path: Path | None) -> UsedTokenStore:
    """TOKEN_STORE_PATH's store: a SQLite file, or memory when unset."""
    return SqliteTokenStore(path) if path is not None else MemoryTokenStore()
