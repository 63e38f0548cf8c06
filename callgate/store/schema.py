"""The call-record schema (SQLAlchemy Core): one definition for SQLite and PostgreSQL.

Times are epoch seconds (float) so `since=` filters and sorting are the same on both backends. The
Alembic migrations in `migrations/versions/` create exactly these tables (a test compares them).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("direction", String(32)),
    Column("workflow", String(64)),
    Column("agent", String(64)),
    Column("campaign_id", String(64)),
    Column("from_number", String(32)),
    Column("to_number", String(32)),
    Column("status", String(16)),  # callgate's view: webhook / in-progress / completed
    Column("twilio_status", String(16)),  # the latest status callback: ringing, busy, no-answer, ...
    Column("answered_by", String(32)),  # Twilio's AnsweredBy, when its own AMD was on
    Column("created_at", Float, nullable=False),  # first time callgate heard of the call
    Column("started_at", Float),  # Media Stream start
    Column("ended_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("twilio_duration_secs", Integer),  # CallDuration from the final status callback
    Column("audio_ms", Float),  # stream audio received
    Column("amd_label", String(32)),
    Column("amd_confidence", Float),
    Column("amd_detector", String(64)),
    Column("amd_latency_ms", Float),  # audio time of the verdict
    Column("beep", Boolean),
    Column("beep_hz", Float),
    Column("beep_onset_ms", Float),
    Column("beep_end_ms", Float),
    Column("message_started_ms", Float),  # audio time the voicemail message started
    Column("outcome", String(48)),
    Column("marks_played", Integer),
    Column("marks_cancelled", Integer),
    Column("agent_turns", Integer),
    Column("event_count", Integer),
    Column("counters", JSON),  # stream counters: gaps, duplicates, bad input, media chunks
    Index("ix_calls_created_at", "created_at"),
    Index("ix_calls_outcome", "outcome"),
    Index("ix_calls_campaign_id", "campaign_id"),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False),
    Column("seq", Integer, nullable=False),  # order within the call
    Column("event", String(48), nullable=False),
    Column("t_ms", Float),  # the call's audio time (None for status callbacks)
    Column("at", Float, nullable=False),  # wall clock when the server saw it
    Column("data", JSON),
    Index("ix_call_events_call_sid", "call_sid", "seq"),
)

transcripts = Table(
    "transcripts",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False),
    Column("turn", Integer, nullable=False),
    Column("role", String(16), nullable=False),  # caller / agent
    Column("text", Text, nullable=False),
    Column("start_ms", Float),
    Column("end_ms", Float),
    Column("latency_ms", Float),  # agent turns: caller's turn end -> first bot audio
    Column("at", Float, nullable=False),
    Column("data", JSON),
    Index("ix_transcripts_call_sid", "call_sid", "turn"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200)),
    Column("workflow", String(64), nullable=False),
    Column("agent", String(64)),
    Column("message", String(200)),
    Column("options", JSON),  # rate, max_concurrent, window, retries, ...
    Column("contacts_sha", String(64)),  # the contacts file it was created from (resume must match)
    Column("next_call_at", Float),  # calls-per-second pacing shared by every runner
    Column("created_at", Float, nullable=False),
)

campaign_entries = Table(
    "campaign_entries",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("campaign_id", String(64), nullable=False),
    Column("row", Integer, nullable=False),  # line in the contacts file
    Column("phone", String(64), nullable=False),
    Column("tz", String(64)),
    Column("data", JSON),
    # pending -> claimed -> calling -> done | retry (-> claimed ...) | skipped | failed
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float),  # not before (retry-after / calling window)
    Column("claimed_by", String(64)),
    Column("claimed_at", Float),
    Column("call_sid", String(64)),
    Column("outcome", String(48)),
    Column("reason", Text),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("campaign_id", "row", name="uq_campaign_entries_row"),
    Index("ix_campaign_entries_state", "campaign_id", "state"),
    Index("ix_campaign_entries_call_sid", "call_sid"),
)

used_stream_tokens = Table(
    "used_stream_tokens",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Column("claimed_at", Float, nullable=False),
    Index("ix_used_stream_tokens_expires_at", "expires_at"),
)
