"""Run a list of numbers as a campaign, and report on it.

    callgate campaign run contacts.csv --workflow voicemail_drop --rate 5 --max-concurrent 20 \\
        [--window 09:00-20:00 --tz-column tz] [--retries busy,no-answer:2 --retry-after 30m]
    callgate campaign report ID

Calls are placed through the server's own POST /calls (same checks, same records). The campaign's
state lives in the database (DATABASE_URL, the server's), so a killed run resumes where it stopped:
run the same command again. Several runners may share one campaign.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

PHONE_COLUMNS = ("phone", "number", "to", "phone_number")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="call every contact of a CSV file (resumable)")
    run.add_argument("contacts", type=Path, help="CSV with a phone column (phone, number or to)")
    run.add_argument("--workflow", default="voicemail_drop")
    run.add_argument("--agent", help="agent spec name (agent workflow)")
    run.add_argument("--message", help="message file name inside MESSAGES_DIR (voicemail_drop)")
    run.add_argument("--rate", type=float, default=1.0, help="calls per second (Twilio's CPS limit; default 1)")
    run.add_argument("--max-concurrent", type=int, default=10, help="never more live calls than this")
    run.add_argument("--window", help="local calling window, e.g. 09:00-20:00")
    run.add_argument("--tz-column", help="CSV column with each contact's IANA time zone (else from the number)")
    run.add_argument("--region", default="US", help="region for numbers written without +country (default US)")
    run.add_argument("--retries", help="outcomes to call again, e.g. busy,no-answer:2")
    run.add_argument("--retry-after", default="30m", help="wait before a retry (default 30m)")
    run.add_argument("--call-timeout", default="15m", help="a call with no outcome by then is failed")
    run.add_argument("--claim-timeout", default="30s", help="a claim older than this, with no call, is retried")
    run.add_argument("--id", dest="campaign_id", help="campaign ID (default: from the file's content)")
    run.add_argument("--server", help="callgate base URL (default: PUBLIC_BASE_URL)")
    run.add_argument("--api-key", help="API key for POST /calls (default: CALLGATE_API_KEY)")
    run.add_argument("--database-url", help="the server's DATABASE_URL (default: from the environment)")
    run.add_argument("--no-wait", action="store_true", help="exit when the rest waits for a window or retry")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    rep = sub.add_parser("report", help="outcome table, CSV and PNG chart of a campaign")
    rep.add_argument("campaign_id")
    rep.add_argument("--out", type=Path, default=Path("."), help="folder for ID.csv and ID.png")
    rep.add_argument("--database-url")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from callgate.cli import CliError
    from callgate.store.campaigns import CampaignError

    try:
        if args.campaign_command == "run":
            return asyncio.run(_run(args))
        return asyncio.run(_report(args))
    except CampaignError as e:
        raise CliError(str(e)) from e
    except (OSError, SQLAlchemyError) as e:
        raise CliError(f"database or file error: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e


def read_contacts(path: Path, tz_column: str | None):
    """Contacts from CSV: the first phone-like column, the tz column, the rest as data."""
    from callgate.store.campaigns import CampaignError, Contact

    if not path.is_file():
        raise CampaignError(f"no contacts file {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip() for h in reader.fieldnames or []]
            phone_col = next((h for h in fields if h.lower() in PHONE_COLUMNS), None)
            if phone_col is None:
                raise CampaignError(f"{path}: no phone column (one of {', '.join(PHONE_COLUMNS)}); found {fields}")
            if tz_column and tz_column not in fields:
                raise CampaignError(f"{path}: no column {tz_column!r}")
            contacts = []
            for i, rec in enumerate(reader, start=2):
                rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
                data = {k: v for k, v in rec.items() if k not in (phone_col, tz_column)}
                contacts.append(Contact(row=i, phone=rec.get(phone_col, ""), tz=rec.get(tz_column or "") or None,
                                        data=data))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CampaignError(f"{path}: not a UTF-8 CSV file ({e})") from e
    return contacts


async def _run(args: argparse.Namespace) -> int:
    import httpx
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from callgate.settings import Settings
    from callgate.store import CallStore
    from callgate.store import campaigns as cs
    from pipelines.workflow_names import UnknownWorkflowError, check_workflow

    if args.rate <= 0 or args.max_concurrent < 1:
        raise cs.CampaignError("--rate must be > 0 and --max-concurrent >= 1")
    try:
        check_workflow(args.workflow)  # the server's own list: it would refuse every call
    except UnknownWorkflowError as e:
        raise cs.CampaignError(str(e)) from e
    settings = Settings()
    options = cs.CampaignOptions(
        workflow=args.workflow, agent=args.agent, message=args.message, rate=args.rate,
        max_concurrent=args.max_concurrent, window=cs.parse_window(args.window) if args.window else None,
        retries=cs.parse_retries(args.retries) if args.retries else {},
        retry_after_secs=cs.parse_duration(args.retry_after), call_timeout_secs=cs.parse_duration(args.call_timeout),
    )
    if options.call_timeout_secs <= 0:
        raise cs.CampaignError("--call-timeout must be > 0")
    claim_timeout = cs.parse_duration(args.claim_timeout)
    contacts = read_contacts(args.contacts, args.tz_column)
    campaign_id = args.campaign_id or "c-" + hashlib.sha256(
        args.contacts.read_bytes() + repr(sorted(options.as_json().items())).encode()
    ).hexdigest()[:12]
    store = CallStore(args.database_url or settings.db_url)
    await store.start(run_migrations=True)
    server = (args.server or settings.public_base_url).rstrip("/")
    api_key = args.api_key or os.environ.get("CALLGATE_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        created = await cs.create_or_resume(store.engine, campaign_id, options, contacts, args.region)
        if not created:
            options = await cs.load_options(store.engine, campaign_id)  # the stored rules win on resume
        counts = await cs.progress(store.engine, campaign_id)
        print(f"campaign {campaign_id}: {'created' if created else 'resumed'}, {counts['total']} contacts, "
              f"{counts.get('skipped', 0)} invalid (skipped)", flush=True)
        placing: set[asyncio.Task] = set()
        async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                          TimeElapsedColumn(), disable=args.quiet) as bar:
                task = bar.add_task(campaign_id, total=counts["total"], detail="")
                next_settle = 0.0
                while True:
                    if time.monotonic() >= next_settle:
                        await cs.settle(store.engine, campaign_id, claim_timeout)
                        counts = await cs.progress(store.engine, campaign_id)
                        next_settle = time.monotonic() + 0.25
                        finished = sum(counts.get(s, 0) for s in ("done", "skipped", "failed"))
                        bar.update(task, completed=finished, detail=_detail(counts))
                        open_now = sum(counts.get(s, 0) for s in cs.OPEN_STATES)
                        if open_now == 0 and not placing:
                            break
                        if args.no_wait and not placing and open_now == counts["waiting"]:
                            break
                    claim = await cs.claim_next(store.engine, campaign_id, worker)
                    if isinstance(claim, cs.Claim):
                        t = asyncio.create_task(_place(client, store.engine, campaign_id, options, claim))
                        placing.add(t)
                        t.add_done_callback(placing.discard)
                        continue
                    await asyncio.sleep(min(claim if claim is not None else 0.25, 0.25))
        if placing:
            await asyncio.gather(*placing, return_exceptions=True)
        counts = await cs.progress(store.engine, campaign_id)
        print(f"campaign {campaign_id}: {_detail(counts)}", flush=True)
        if counts["waiting"]:
            print(f"{counts['waiting']} contacts wait for their calling window or retry; run again to continue")
        return 0
    finally:
        await store.close()


def _detail(counts: dict[str, int]) -> str:
    keys = ("done", "calling", "claimed", "pending", "retry", "waiting", "failed", "skipped")
    return " ".join(f"{k} {counts[k]}" for k in keys if counts.get(k))


async def _place(client: Any, engine: Any, campaign_id: str, options: Any, claim: Any) -> None:
    """POST /calls for one claimed contact; a refusal fails the contact, an outage puts it back."""
    import httpx

    from callgate.store import campaigns as cs

    body = {"to": claim.phone, "workflow": options.workflow, "campaign": campaign_id}
    body.update({k: v for k, v in (("message", options.message), ("agent", options.agent)) if v})
    try:
        r = await client.post("/calls", json=body)
    except httpx.HTTPError as e:
        await cs.release(engine, claim.entry_id, 5.0, f"server unreachable: {e}")
        return
    if r.status_code == 201:
        await cs.mark_calling(engine, claim.entry_id, r.json()["call_sid"])
    elif r.status_code in (429, 502, 503, 504):  # busy, Twilio down, draining: later
        await cs.release(engine, claim.entry_id, 5.0, f"HTTP {r.status_code}: {r.text[:200]}")
    else:
        await cs.mark_failed(engine, claim.entry_id, f"HTTP {r.status_code}: {r.text[:300]}")


async def _report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from callgate.settings import Settings
    from callgate.store import CallStore
    from callgate.store import campaigns as cs
    from callgate.store.migrate import migrate

    store = CallStore(args.database_url or Settings().db_url)
    try:
        await migrate(store.engine)  # a fresh database then simply has no such campaign
        rows = await cs.report_rows(store.engine, args.campaign_id)
    finally:
        await store.engine.dispose()
    by = {c: 0 for c in cs.CATEGORIES}
    for r in rows:
        by[r["outcome"]] = by.get(r["outcome"], 0) + 1
    played = sum(r["message_played"] for r in rows)
    turns = sum(r["agent_turns"] for r in rows)
    table = Table(title=f"campaign {args.campaign_id}: {len(rows)} contacts")
    table.add_column("outcome")
    table.add_column("contacts", justify="right")
    table.add_column("share", justify="right")
    for name, n in by.items():
        if n or name in ("machine", "human", "ivr", "intercept", "no-answer", "busy", "failed"):
            table.add_row(name, str(n), f"{100 * n / max(len(rows), 1):.1f} %")
    table.add_row("message played", str(played), "")
    table.add_row("agent turns", str(turns), "")
    Console().print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"{args.campaign_id}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["row"])
        writer.writeheader()
        writer.writerows(rows)
    png_path = args.out / f"{args.campaign_id}.png"
    _chart(by, played, png_path, args.campaign_id)
    print(f"wrote {csv_path} and {png_path}")
    return 0


def _chart(by: dict[str, int], played: int, path: Path, title: str) -> None:
    from callgate.cli import CliError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise CliError("the PNG chart needs matplotlib: pip install 'callgate[tune]'") from e
    names = [k for k, v in by.items() if v] or ["none"]
    values = [by.get(k, 0) for k in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, values, color="#3b6ea8")
    ax.set_title(f"campaign {title}: outcomes ({played} messages played)")
    ax.set_ylabel("contacts")
    for i, v in enumerate(values):
        ax.text(i, v, str(v), ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
