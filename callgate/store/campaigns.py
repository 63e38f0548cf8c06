"""Campaign state in the database: contacts, claims, pacing, outcomes. Every runner shares it.

A contact is claimed inside one transaction that first locks the campaign's row (PostgreSQL
`SELECT ... FOR UPDATE`; SQLite takes its database write lock with the first UPDATE), so the live-call
count and the calls-per-second pacing hold across runners; the contact rows themselves are picked with
`FOR UPDATE SKIP LOCKED` on PostgreSQL. A claim becomes `calling` once POST /calls returned a CallSid,
and `done` (or `retry`) once the call's record says it has ended.

States: pending -> claimed -> calling -> done | retry (-> claimed ...) ; skipped (invalid number) ;
failed (refused by the server or no outcome in time).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from callgate.store.schema import calls, campaign_entries, campaigns

LIVE_STATES = ("claimed", "calling")
OPEN_STATES = ("pending", "retry", "claimed", "calling")
TERMINAL_TWILIO = ("completed", "busy", "no-answer", "failed", "canceled")
PACE_HEADROOM = 1.05  # stay 5 % under the calls-per-second limit, so network jitter never bunches calls over it
CATEGORIES = ("machine", "human", "ivr", "intercept", "no-answer", "busy", "failed", "unknown", "invalid", "pending")


class CampaignError(ValueError):
    """A campaign cannot be created or resumed as asked."""


@dataclass
class CampaignOptions:
    """How a campaign is run; stored with it so a resumed run uses the same rules."""

    workflow: str = "voicemail_drop"
    agent: str | None = None
    message: str | None = None
    rate: float = 1.0  # calls per second (Twilio's CPS limit for the account)
    max_concurrent: int = 10
    window: tuple[int, int] | None = None  # local minutes since midnight [start, end)
    retries: dict[str, int] = field(default_factory=dict)  # outcome -> extra attempts
    retry_after_secs: float = 1800.0
    call_timeout_secs: float = 900.0  # a call with no outcome by then is failed

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "window": list(self.window) if self.window else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CampaignOptions:
        data = dict(data)
        if data.get("window"):
            data["window"] = tuple(data["window"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --- parsing the command line's rules ------------------------------------------------------------


def parse_window(text: str) -> tuple[int, int]:
    """'09:00-20:00' -> (540, 1200) local minutes."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not m:
        raise CampaignError(f"window must look like 09:00-20:00, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (0 <= h1 <= 23 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
        raise CampaignError(f"window has an impossible time: {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise CampaignError("window start and end are equal")
    return start, end


def parse_retries(text: str) -> dict[str, int]:
    """'busy,no-answer:2' -> {'busy': 2, 'no-answer': 2}: a count applies to the outcomes before it that
    have none; an outcome with no count anywhere after it gets one retry."""
    result: dict[str, int] = {}
    uncounted: list[str] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, count = part.partition(":")
        if name not in ("busy", "no-answer", "failed", "machine", "unknown"):
            raise CampaignError(f"cannot retry on {name!r}: use busy, no-answer, failed, machine or unknown")
        if count:
            if not count.isdigit() or not 0 < int(count) <= 10:
                raise CampaignError(f"retry count must be 1..10, got {count!r}")
            for n in (*uncounted, name):
                result[n] = int(count)
            uncounted = []
        else:
            uncounted.append(name)
    for n in uncounted:
        result[n] = 1
    return result


def parse_duration(text: str) -> float:
    """'30m', '45s', '2h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise CampaignError(f"duration must look like 30m, 45s or 2h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def normalize_number(raw: str, region: str) -> tuple[str | None, str | None]:
    """(E.164, None) or (None, why it cannot be called)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as e:
        return None, f"not a phone number: {e}"
    if not phonenumbers.is_valid_number(number):
        return None, "not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def contact_zone(tz: str | None, e164: str) -> tuple[str | None, str | None]:
    """The contact's IANA zone: the tz column when given, else the number's (when it has exactly one)."""
    if tz:
        try:
            ZoneInfo(tz)
            return tz, None
        except (ZoneInfoNotFoundError, ValueError):
            return None, f"unknown time zone {tz!r}"
    zones = [z for z in phone_timezones.time_zones_for_number(phonenumbers.parse(e164)) if z != "Etc/Unknown"]
    return (zones[0], None) if len(zones) == 1 else (None, None)


def next_window_opening(window: tuple[int, int], zone: str | None, now: float) -> float | None:
    """None when `now` is inside the contact's calling window, else when it next opens (epoch secs).
    A contact without a known zone is called in UTC's window."""
    start, end = window
    local = datetime.fromtimestamp(now, ZoneInfo(zone or "UTC"))
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if inside:
        return None
    opening = local.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
    if opening <= local:
        opening += timedelta(days=1)
    return opening.timestamp()


# --- the database side -----------------------------------------------------------------------------


@dataclass
class Contact:
    row: int
    phone: str
    tz: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Claim:
    entry_id: int
    row: int
    phone: str
    attempts: int


def contacts_sha(contacts: list[Contact]) -> str:
    h = hashlib.sha256()
    for c in contacts:
        h.update(f"{c.row}\x1f{c.phone}\x1f{c.tz or ''}\n".encode())
    return h.hexdigest()


async def create_or_resume(
    engine: AsyncEngine, campaign_id: str, options: CampaignOptions, contacts: list[Contact], region: str = "US"
) -> bool:
    """Create the campaign with its contacts (invalid numbers `skipped`, with the reason), or find it
    again for a resumed run (same contacts required). True if it was created now."""
    sha = contacts_sha(contacts)
    try:
        return await _create(engine, campaign_id, options, contacts, region, sha)
    except IntegrityError:  # another runner created it at the same moment: join it
        return await _create(engine, campaign_id, options, contacts, region, sha)


async def _create(
    engine: AsyncEngine, campaign_id: str, options: CampaignOptions, contacts: list[Contact], region: str, sha: str
) -> bool:
    now = time.time()
    async with engine.begin() as conn:
        existing = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).mappings().first()
        if existing is not None:
            if existing["contacts_sha"] != sha:
                raise CampaignError(f"campaign {campaign_id} exists with a different contacts file")
            return False
        await conn.execute(
            insert(campaigns).values(
                id=campaign_id, name=campaign_id, workflow=options.workflow, agent=options.agent,
                message=options.message, options=options.as_json(), contacts_sha=sha, next_call_at=now,
                created_at=now,
            )
        )
        rows = []
        for c in contacts:
            e164, why = normalize_number(c.phone, region)
            zone = None
            if e164:
                zone, why = contact_zone(c.tz, e164)
            rows.append({
                "campaign_id": campaign_id, "row": c.row, "phone": e164 or c.phone[:64], "tz": zone,
                "data": c.data or None, "state": "skipped" if why else "pending", "attempts": 0,
                "reason": why, "updated_at": now,
            })
        if rows:
            await conn.execute(insert(campaign_entries), rows)
    return True


async def load_options(engine: AsyncEngine, campaign_id: str) -> CampaignOptions:
    async with engine.connect() as conn:
        row = (await conn.execute(select(campaigns.c.options).where(campaigns.c.id == campaign_id))).first()
    if row is None:
        raise CampaignError(f"no campaign {campaign_id!r}")
    return CampaignOptions.from_json(row[0])


async def claim_next(engine: AsyncEngine, campaign_id: str, worker: str) -> Claim | float | None:
    """The next contact to call now (claimed), or seconds to wait before asking again, or None when
    no open contact is left that could be called without waiting for a window."""
    now = time.time()
    pg = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        # Lock the campaign: concurrency and pacing are decided by one runner at a time.
        if pg:
            q = select(campaigns.c.next_call_at, campaigns.c.options).where(campaigns.c.id == campaign_id)
            camp = (await conn.execute(q.with_for_update())).first()
        else:
            await conn.execute(
                update(campaigns).where(campaigns.c.id == campaign_id).values(next_call_at=campaigns.c.next_call_at)
            )
            camp = (await conn.execute(
                select(campaigns.c.next_call_at, campaigns.c.options).where(campaigns.c.id == campaign_id)
            )).first()
        if camp is None:
            raise CampaignError(f"no campaign {campaign_id!r}")
        options = CampaignOptions.from_json(camp.options)
        live = (await conn.execute(
            select(func.count()).select_from(campaign_entries).where(
                campaign_entries.c.campaign_id == campaign_id, campaign_entries.c.state.in_(LIVE_STATES)
            )
        )).scalar_one()
        if live >= options.max_concurrent:
            return 0.05
        pace_at = camp.next_call_at or now
        if pace_at > now:
            return pace_at - now
        due = or_(campaign_entries.c.next_at.is_(None), campaign_entries.c.next_at <= now)
        q = (
            select(campaign_entries.c.id, campaign_entries.c.row, campaign_entries.c.phone,
                   campaign_entries.c.tz, campaign_entries.c.attempts)
            .where(campaign_entries.c.campaign_id == campaign_id,
                   campaign_entries.c.state.in_(("pending", "retry")), due)
            .order_by(campaign_entries.c.next_at.is_not(None), campaign_entries.c.next_at, campaign_entries.c.row)
            .limit(50)
        )
        if pg:
            q = q.with_for_update(skip_locked=True)
        for entry in (await conn.execute(q)).all():
            if options.window:
                opening = next_window_opening(options.window, entry.tz, now)
                if opening is not None:  # outside its local calling window: not before it opens
                    await conn.execute(
                        update(campaign_entries).where(campaign_entries.c.id == entry.id)
                        .values(next_at=opening, updated_at=now)
                    )
                    continue
            await conn.execute(
                update(campaign_entries).where(campaign_entries.c.id == entry.id).values(
                    state="claimed", claimed_by=worker, claimed_at=now, attempts=entry.attempts + 1,
                    call_sid=None, updated_at=now,
                )
            )
            await conn.execute(
                update(campaigns).where(campaigns.c.id == campaign_id)
                .values(next_call_at=max(pace_at, now) + PACE_HEADROOM / options.rate)
            )
            return Claim(entry.id, entry.row, entry.phone, entry.attempts + 1)
        soonest = (await conn.execute(
            select(func.min(campaign_entries.c.next_at)).where(
                campaign_entries.c.campaign_id == campaign_id, campaign_entries.c.state.in_(("pending", "retry"))
            )
        )).scalar_one()
    if soonest is not None and soonest > now:
        return soonest - now
    return 0.2 if live else None


async def mark_calling(engine: AsyncEngine, entry_id: int, call_sid: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(campaign_entries).where(campaign_entries.c.id == entry_id)
                           .values(state="calling", call_sid=call_sid, updated_at=time.time()))


async def mark_failed(engine: AsyncEngine, entry_id: int, reason: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(campaign_entries).where(campaign_entries.c.id == entry_id)
                           .values(state="failed", reason=reason[:500], updated_at=time.time()))


async def release(engine: AsyncEngine, entry_id: int, retry_in_secs: float, reason: str) -> None:
    """The call could not be placed for a passing reason: back to pending (this attempt not counted)."""
    async with engine.begin() as conn:
        await conn.execute(update(campaign_entries).where(campaign_entries.c.id == entry_id).values(
            state="pending", attempts=campaign_entries.c.attempts - 1, next_at=time.time() + retry_in_secs,
            reason=reason[:500], updated_at=time.time(),
        ))


def call_category(call: dict[str, Any] | None) -> str:
    """The report's outcome class of one call record."""
    if call is None:
        return "unknown"
    status, label = call.get("twilio_status"), call.get("amd_label")
    if status in ("busy", "no-answer"):
        return status
    if status in ("failed", "canceled"):
        return "failed"
    if label == "carrier_intercept":
        return "intercept"
    if label in ("machine", "human", "ivr"):
        return label
    if call.get("outcome") == "message_played" or call.get("beep"):
        return "machine"
    return "unknown"


def call_finished(call: dict[str, Any]) -> bool:
    return call.get("status") == "completed" or call.get("twilio_status") in TERMINAL_TWILIO


async def settle(engine: AsyncEngine, campaign_id: str, claim_timeout_secs: float = 30.0) -> int:
    """Move ended calls to done / retry, adopt or release stale claims; returns how many changed."""
    now = time.time()
    options = await load_options(engine, campaign_id)
    changed = 0
    async with engine.begin() as conn:
        q = (
            select(campaign_entries, calls)
            .select_from(campaign_entries.outerjoin(calls, calls.c.call_sid == campaign_entries.c.call_sid))
            .where(campaign_entries.c.campaign_id == campaign_id, campaign_entries.c.state == "calling")
        )
        for r in (await conn.execute(q)).mappings().all():
            entry_id = r[campaign_entries.c.id]
            call = {k.name: r[k] for k in calls.columns} if r[calls.c.call_sid] else None
            if call is None or not call_finished(call):
                if now - (r[campaign_entries.c.claimed_at] or now) > options.call_timeout_secs:
                    await conn.execute(update(campaign_entries).where(campaign_entries.c.id == entry_id)
                                       .values(state="failed", reason="no outcome in time", updated_at=now))
                    changed += 1
                continue
            category = call_category(call)
            attempts = r[campaign_entries.c.attempts]
            retry = category in options.retries and attempts <= options.retries[category]
            await conn.execute(update(campaign_entries).where(campaign_entries.c.id == entry_id).values(
                state="retry" if retry else "done",
                outcome=category,
                next_at=now + options.retry_after_secs if retry else None,
                updated_at=now,
            ))
            changed += 1
        # A claim whose runner died: adopt the call if the server recorded one, else call again.
        stale = (await conn.execute(
            select(campaign_entries).where(
                campaign_entries.c.campaign_id == campaign_id, campaign_entries.c.state == "claimed",
                campaign_entries.c.claimed_at < now - claim_timeout_secs,
            )
        )).mappings().all()
        for e in stale:
            placed = (await conn.execute(
                select(calls.c.call_sid).where(
                    calls.c.campaign_id == campaign_id, calls.c.to_number == e["phone"],
                    calls.c.created_at >= e["claimed_at"] - 1.0,
                ).order_by(calls.c.created_at).limit(1)
            )).first()
            values = (
                {"state": "calling", "call_sid": placed[0]} if placed
                else {"state": "pending", "attempts": e["attempts"] - 1, "claimed_by": None}
            )
            await conn.execute(update(campaign_entries).where(campaign_entries.c.id == e["id"])
                               .values(updated_at=now, **values))
            changed += 1
    return changed


async def progress(engine: AsyncEngine, campaign_id: str) -> dict[str, int]:
    """Contacts by state, plus `waiting`: open ones not due yet (retry-after or calling window)."""
    now = time.time()
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(campaign_entries.c.state, func.count()).where(campaign_entries.c.campaign_id == campaign_id)
            .group_by(campaign_entries.c.state)
        )).all()
        waiting = (await conn.execute(
            select(func.count()).select_from(campaign_entries).where(
                campaign_entries.c.campaign_id == campaign_id,
                campaign_entries.c.state.in_(("pending", "retry")), campaign_entries.c.next_at > now,
            )
        )).scalar_one()
    counts = {state: n for state, n in rows}
    counts["waiting"] = waiting
    counts["total"] = sum(n for state, n in rows)
    return counts


async def report_rows(engine: AsyncEngine, campaign_id: str) -> list[dict[str, Any]]:
    """One row per contact with its latest call's outcome class, AMD verdict, message and agent turns."""
    async with engine.connect() as conn:
        if (await conn.execute(select(campaigns.c.id).where(campaigns.c.id == campaign_id))).first() is None:
            raise CampaignError(f"no campaign {campaign_id!r}")
        q = (
            select(campaign_entries, calls)
            .select_from(campaign_entries.outerjoin(calls, and_(calls.c.call_sid == campaign_entries.c.call_sid)))
            .where(campaign_entries.c.campaign_id == campaign_id)
            .order_by(campaign_entries.c.row)
        )
        out = []
        for r in (await conn.execute(q)).mappings().all():
            state = r[campaign_entries.c.state]
            call = {k.name: r[k] for k in calls.columns} if r[calls.c.call_sid] else None
            if state == "skipped":
                category = "invalid"
            elif state in OPEN_STATES:
                category = "pending"
            elif state == "failed" and call is None:
                category = "failed"
            else:
                category = r[campaign_entries.c.outcome] or call_category(call)
            out.append({
                "row": r[campaign_entries.c.row],
                "phone": r[campaign_entries.c.phone],
                "state": state,
                "attempts": r[campaign_entries.c.attempts],
                "outcome": category,
                "call_sid": r[campaign_entries.c.call_sid],
                "amd_label": call and call["amd_label"],
                "twilio_status": call and call["twilio_status"],
                "message_played": bool(call and call["outcome"] == "message_played"),
                "agent_turns": (call and call["agent_turns"]) or 0,
                "reason": r[campaign_entries.c.reason],
            })
    return out
