"""Call records, call events, transcripts, campaigns and their entries, used Stream tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("direction", sa.String(32)),
        sa.Column("workflow", sa.String(64)),
        sa.Column("agent", sa.String(64)),
        sa.Column("campaign_id", sa.String(64)),
        sa.Column("from_number", sa.String(32)),
        sa.Column("to_number", sa.String(32)),
        sa.Column("status", sa.String(16)),
        sa.Column("twilio_status", sa.String(16)),
        sa.Column("answered_by", sa.String(32)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("twilio_duration_secs", sa.Integer),
        sa.Column("audio_ms", sa.Float),
        sa.Column("amd_label", sa.String(32)),
        sa.Column("amd_confidence", sa.Float),
        sa.Column("amd_detector", sa.String(64)),
        sa.Column("amd_latency_ms", sa.Float),
        sa.Column("beep", sa.Boolean),
        sa.Column("beep_hz", sa.Float),
        sa.Column("beep_onset_ms", sa.Float),
        sa.Column("beep_end_ms", sa.Float),
        sa.Column("message_started_ms", sa.Float),
        sa.Column("outcome", sa.String(48)),
        sa.Column("marks_played", sa.Integer),
        sa.Column("marks_cancelled", sa.Integer),
        sa.Column("agent_turns", sa.Integer),
        sa.Column("event_count", sa.Integer),
        sa.Column("counters", sa.JSON),
    )
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index("ix_calls_outcome", "calls", ["outcome"])
    op.create_index("ix_calls_campaign_id", "calls", ["campaign_id"])

    op.create_table(
        "call_events",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event", sa.String(48), nullable=False),
        sa.Column("t_ms", sa.Float),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_call_events_call_sid", "call_events", ["call_sid", "seq"])

    op.create_table(
        "transcripts",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("start_ms", sa.Float),
        sa.Column("end_ms", sa.Float),
        sa.Column("latency_ms", sa.Float),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_transcripts_call_sid", "transcripts", ["call_sid", "turn"])

    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(64)),
        sa.Column("message", sa.String(200)),
        sa.Column("options", sa.JSON),
        sa.Column("contacts_sha", sa.String(64)),
        sa.Column("next_call_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )

    op.create_table(
        "campaign_entries",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("phone", sa.String(64), nullable=False),
        sa.Column("tz", sa.String(64)),
        sa.Column("data", sa.JSON),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_at", sa.Float),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("outcome", sa.String(48)),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("campaign_id", "row", name="uq_campaign_entries_row"),
    )
    op.create_index("ix_campaign_entries_state", "campaign_entries", ["campaign_id", "state"])
    op.create_index("ix_campaign_entries_call_sid", "campaign_entries", ["call_sid"])

    op.create_table(
        "used_stream_tokens",
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("claimed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_used_stream_tokens_expires_at", "used_stream_tokens", ["expires_at"])


def downgrade() -> None:
    for table in ("used_stream_tokens", "campaign_entries", "campaigns", "transcripts", "call_events", "calls"):
        op.drop_table(table)
