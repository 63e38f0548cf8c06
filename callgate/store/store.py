"""CallStore: call records written by a background task, read by the API.

The server never waits on the database while a call runs: `update_call`, `add_event` and
`add_transcript` only append to an in-memory queue, and one writer task flushes it in batches, one
transaction per batch, at least once every DB_FLUSH_SECS (<= 1 s). If the database is unreachable the
batch goes back to the head of the queue, `db_errors` counts it and the calls carry on; the queue is
bounded (DB_QUEUE_MAX) and what no longer fits is dropped and counted. A process killed with SIGKILL
therefore loses at most the records of its last flush interval.

Values are fitted to their columns when queued (strings cut to the column's length, integers clamped),
so a caller's 40-character SIP address cannot make PostgreSQL refuse a batch. Should the database still
refuse a batch while it answers, the batch is split until the one record it refuses is found; that record
is dropped and counted (`refused`) and every other call's records are written, instead of the whole queue
waiting forever behind one bad row. Batches are small and the writer yields between them, so catching up
after an outage never holds the event loop for long.

Both drivers are asyncio-native (aiosqlite runs SQLite in its own thread; asyncpg is async).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger
from sqlalchemy import Integer, String, Table, event, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from callgate.store.migrate import migrate
from callgate.store.schema import call_events, calls, transcripts

CALL_COLUMNS = frozenset(c.name for c in calls.columns) - {"call_sid", "created_at", "updated_at"}
WRITE_TIMEOUT_SECS = 10.0
INT32 = (-(2**31), 2**31 - 1)


def _column_fits(table: Table) -> tuple[dict[str, int], frozenset[str]]:
    """(string column -> its length, the 32-bit integer columns) of a table."""
    lengths = {c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}
    ints = frozenset(c.name for c in table.columns if type(c.type) is Integer)
    return lengths, ints


_FITS = {t.name: _column_fits(t) for t in (calls, call_events, transcripts)}


def fit_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row with strings cut to their column's length and integers clamped to 32 bits: what the edge
    passes on from a caller (From, To, an agent name) must never make the database refuse a batch."""
    lengths, ints = _FITS[table]
    for name, value in row.items():
        if isinstance(value, str) and name in lengths and len(value) > lengths[name]:
            row[name] = value[: lengths[name]]
        elif name in ints and isinstance(value, int) and not isinstance(value, bool):
            row[name] = min(max(value, INT32[0]), INT32[1])
    return row


@dataclass
class StoreStats:
    """What the writer has done; exported as metrics."""

    flushes: int = 0
    written: int = 0
    db_errors: int = 0
    dropped: int = 0
    refused: int = 0  # records the database refused on their own while it answered (dropped, logged)
    last_error: str | None = None
    last_flush_at: float | None = None


def make_engine(url: str) -> AsyncEngine:
    """An async engine tuned for its backend (SQLite: WAL, busy timeout; PostgreSQL: a small pool)."""
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers never block the writer, and several worker processes can share the file.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # a committed batch survives a killed process
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    # Long-lived calls never hold a connection: the writer and the API borrow one per statement.
    # A database that stops answering must not hold a request for minutes: bounded connect and statements.
    return create_async_engine(
        url, pool_size=5, max_overflow=5, pool_pre_ping=True, pool_recycle=1800,
        connect_args={"timeout": 5, "command_timeout": WRITE_TIMEOUT_SECS},
    )


class CallStore:
    """Queued writes, direct reads. `start()` migrates and starts the writer; `close()` flushes."""

    def __init__(
        self, url: str, *, flush_secs: float = 0.2, queue_max: int = 50_000, batch_max: int = 500
    ) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.flush_secs = min(flush_secs, 1.0)
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.stats = StoreStats()
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight = 0
        self._flush_lock = asyncio.Lock()  # one batch at a time, so later updates of a call land last

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @property
    def depth(self) -> int:
        """Records not yet committed (queued, or in the batch being written)."""
        return len(self._queue) + self._inflight

    async def start(self, *, run_migrations: bool = True) -> None:
        if run_migrations:
            await migrate(self.engine)
        self._task = asyncio.create_task(self._writer(), name="callgate-store-writer")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after a last flush (bounded by `timeout`), then drop the pool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
            self._task = None
        if self._queue:
            logger.error(f"call store closed with {len(self._queue)} records unwritten")
        await self.engine.dispose()

    # --- writes (never wait on the database) -------------------------------------------------

    def _put(self, kind: str, item: Any) -> None:
        if len(self._queue) >= self.queue_max:
            self.stats.dropped += 1
            if self.stats.dropped in (1, 10, 100, 1000) or self.stats.dropped % 10_000 == 0:
                logger.error(f"call store queue full ({self.queue_max}): {self.stats.dropped} records dropped")
            return
        self._queue.append((kind, item))

    def update_call(self, call_sid: str, **fields: Any) -> None:
        """Create or update the call's row with these columns (later updates win)."""
        unknown = set(fields) - CALL_COLUMNS
        if unknown:
            raise ValueError(f"unknown call columns: {sorted(unknown)}")
        self._put("call", (call_sid[:64], time.time(), fit_row("calls", fields)))

    def add_event(self, call_sid: str, seq: int, event: Mapping[str, Any], at: float | None = None) -> None:
        """One public call event (`{"event": ..., "t_ms": ..., ...}`), in the call's order `seq`."""
        data = {k: v for k, v in event.items() if k not in ("event", "t_ms")}
        self._put(
            "event",
            fit_row(
                "call_events",
                {
                    "call_sid": call_sid,
                    "seq": seq,
                    "event": str(event.get("event", "event")),
                    "t_ms": event.get("t_ms"),
                    "at": at or time.time(),
                    "data": data or None,
                },
            ),
        )

    def add_transcript(
        self,
        call_sid: str,
        turn: int,
        role: str,
        text: str,
        *,
        start_ms: float | None = None,
        end_ms: float | None = None,
        latency_ms: float | None = None,
        **data: Any,
    ) -> None:
        """One utterance of an agent call: the caller's or the agent's, with its audio-time span."""
        if role not in ("caller", "bot"):
            raise ValueError(f"role must be 'caller' or 'agent', got {role!r}")
        self._put(
            "transcript",
            fit_row(
                "transcripts",
                {
                    "call_sid": call_sid,
                    "turn": turn,
                    "role": role,
                    "text": text,
                    "start_ms": start_ms,
                    "end_ms": end_ms,
                    "latency_ms": latency_ms,
                    "at": time.time(),
                    "data": data or None,
                },
            ),
        )

    # --- the writer --------------------------------------------------------------------------

    async def _writer(self) -> None:
        backoff = self.flush_secs
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            ok = await self.flush()
            if self._closing:
                return  # after a last flush; close() reports anything left
            # While the database is down, retry less often, but never less than once a second.
            backoff = self.flush_secs if ok else min(1.0, backoff * 2)

    async def flush(self) -> bool:
        """Write everything queued now, batch by batch; False if the database refused."""
        async with self._flush_lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        while self._queue:
            n = min(len(self._queue), self.batch_max)
            batch = [self._queue.popleft() for _ in range(n)]
            self._inflight = n
            try:
                await asyncio.wait_for(self._write(batch), WRITE_TIMEOUT_SECS)
            except Exception as e:  # any driver error: keep the records, keep the calls going
                self._note_error(e)
                unwritten = await self._write_apart(batch) if await self._reachable() else batch
                self._inflight = 0
                if unwritten:  # the database is down: the records wait at the head of the queue
                    self._queue.extendleft(reversed(unwritten))
                    return False
                continue
            self._inflight = 0
            self._count_written(n)
            await asyncio.sleep(0)  # between batches, the calls' frames go first
        return True

    def _note_error(self, e: Exception) -> None:
        self.stats.db_errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"[:300]
        if self.stats.db_errors in (1, 10, 100) or self.stats.db_errors % 1000 == 0:
            logger.error(
                f"call store: write failed ({self.stats.db_errors} so far, {len(self._queue)} queued): "
                f"{self.stats.last_error}"
            )

    async def _reachable(self) -> bool:
        """Whether the database answers at all (a refused batch then holds a record it will never take)."""
        async def ping() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(ping(), WRITE_TIMEOUT_SECS)
        except Exception:
            return False
        return True

    async def _write_apart(self, batch: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Split a refused batch in halves, in order, until the records the database refuses on their own
        are found; drop and count those, write the rest. Returns what is left unwritten if the database
        stops answering meanwhile (it goes back to the queue)."""
        parts = [batch]
        while parts:
            part = parts.pop(0)
            try:
                await asyncio.wait_for(self._write(part), WRITE_TIMEOUT_SECS)
            except Exception as e:
                if len(part) > 1:
                    mid = len(part) // 2
                    parts[:0] = [part[:mid], part[mid:]]
                    continue
                if not await self._reachable():
                    return [record for p in (part, *parts) for record in p]
                self.stats.refused += 1
                kind, item = part[0]
                sid = item[0] if kind == "call" else item["call_sid"]
                logger.error(f"call store: the database refused a {kind} record of {sid}; dropped: {e!r:.300}")
                continue
            self._count_written(len(part))
        return []

    def _count_written(self, n: int) -> None:
        self.stats.flushes += 1
        self.stats.written += n
        self.stats.last_flush_at = time.time()

    async def _write(self, batch: list[tuple[str, Any]]) -> None:
        merged: dict[str, tuple[float, float, dict[str, Any]]] = {}
        events: list[dict[str, Any]] = []
        texts: list[dict[str, Any]] = []
        for kind, item in batch:
            if kind == "call":
                sid, ts, fields = item
                first, _, acc = merged.get(sid, (ts, ts, {}))
                merged[sid] = (first, ts, {**acc, **fields})
            elif kind == "event":
                events.append(item)
            else:
                texts.append(item)
        # One upsert statement per set of columns, executed for all its calls at once: the transaction
        # (and SQLite's file lock, which other workers' token claims wait for) spans a few round trips
        # to the driver, not one per call, however busy the event loop is.
        insert_for = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for sid, (first, last, fields) in merged.items():
            row = {"call_sid": sid, "created_at": first, "updated_at": last, **fields}
            groups.setdefault(tuple(sorted(fields)), []).append(row)
        upserts = []
        for columns, rows in groups.items():
            stmt = insert_for(calls)
            stmt = stmt.on_conflict_do_update(
                index_elements=[calls.c.call_sid],
                set_={name: stmt.excluded[name] for name in (*columns, "updated_at")},
            )
            upserts.append((stmt, rows))
        async with self.engine.begin() as conn:
            for stmt, rows in upserts:
                await conn.execute(stmt, rows)
            if events:
                await conn.execute(insert(call_events), events)
            if texts:
                await conn.execute(insert(transcripts), texts)

    # --- reads -------------------------------------------------------------------------------

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call's row with its events and transcript, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.call_sid == call_sid))).mappings().first()
            if row is None:
                return None
            ev = await conn.execute(
                select(call_events)
                .where(call_events.c.call_sid == call_sid)
                .order_by(call_events.c.at, call_events.c.seq, call_events.c.id)
            )
            tr = await conn.execute(
                select(transcripts)
                .where(transcripts.c.call_sid == call_sid)
                .order_by(transcripts.c.turn, transcripts.c.id)
            )
            call = dict(row)
            call["events"] = [
                {"event": e["event"], "t_ms": e["t_ms"], "at": e["at"], **(e["data"] or {})} for e in ev.mappings()
            ]
            call["transcript"] = [
                {k: t[k] for k in ("turn", "role", "text", "start_ms", "end_ms", "latency_ms", "at")}
                | (t["data"] or {})
                for t in tr.mappings()
            ]
            return call

    async def list_calls(
        self,
        *,
        since: float | None = None,
        outcome: str | None = None,
        campaign: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Calls newest first, filtered by creation time, outcome and campaign."""
        q = select(calls).order_by(calls.c.created_at.desc(), calls.c.call_sid).limit(limit).offset(offset)
        if since is not None:
            q = q.where(calls.c.created_at >= since)
        if outcome is not None:
            q = q.where(calls.c.outcome == outcome)
        if campaign is not None:
            q = q.where(calls.c.campaign_id == campaign)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]
