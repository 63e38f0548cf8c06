"""`callgate campaign run` against the real server and the Twilio simulator: 200 contacts, rate and
concurrency limits measured at Twilio's side, calling windows, retries, a runner killed halfway and
resumed (no contact called twice, none missed), then `campaign report` writes its CSV and PNG."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from twilio.request_validator import RequestValidator

from callgate.audio import save_wav, to_int16
from callgate.store.campaigns import parse_retries, parse_window
from callgate.synth import concat, make_voicemail_greeting, silence, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, FAST_STREAM
from tests.server.processes import REPO

N_CONTACTS = 200
RATE = 10.0
MAX_CONCURRENT = 8
CAMPAIGN = "spring-test"


def contact_plan() -> list[dict[str, str]]:
    """200 rows: 10 invalid numbers, 20 outside their calling window, the rest with a planned outcome."""
    rows = []
    for i in range(N_CONTACTS):
        phone = f"+1415200{i:04d}"
        tz, plan = "UTC", ["no-answer", "busy", "failed", "no-answer", "no-answer"][i % 5]
        if i % 20 == 7:
            phone, plan = ["12345", "not a number", "+1555"][i % 3], "invalid"
        elif i % 10 == 3:
            tz, plan = "Etc/GMT-12", "outside"  # UTC+12: outside a 3-hour window around UTC now
        elif i % 16 == 1:
            plan = "human"
        elif i % 16 == 9:
            plan = "machine"
        rows.append({"phone": phone, "tz": tz, "name": f"contact {i}", "plan": plan})
    return rows


def window_around_now() -> str:
    h = datetime.now(UTC).hour
    return f"{(h - 1) % 24:02d}:00-{(h + 2) % 24:02d}:00"


class Twilio:
    """The REST stand-in's on_create: plays each created call out by its contact's plan, and measures
    what Twilio would see: calls created per second and calls live at once."""

    def __init__(self, plans: dict[str, str], audio: dict[str, object]):
        self.plans = plans
        self.audio = audio
        self.rest: RestStandIn | None = None
        self.created: list[tuple[float, str]] = []
        self.live = 0
        self.max_live = 0
        self.validator = RequestValidator(AUTH_TOKEN)

    async def on_create(self, created: dict) -> None:
        self.created.append((time.monotonic(), created["To"]))
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        ended = False
        try:
            plan = self.plans[created["To"]]
            if plan in ("human", "machine"):
                await simulate_call(
                    self.audio[plan], created["Url"], speed=2.0, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                    rest=self.rest, call_sid=created["sid"], to_number=created["To"], tail_secs=15,
                )
                final = ("completed", 9, {"CallDuration": "3"})
            else:
                await self.status(created, "initiated", 0)
                await asyncio.sleep(0.3)
                await self.status(created, "ringing", 1)
                await asyncio.sleep(0.3)
                final = (plan, 2, {})
            # The call is over (hung up, busy, unanswered) before Twilio reports it: its slot is free now.
            self.live -= 1
            ended = True
            await self.status(created, final[0], final[1], **final[2])
        finally:
            if not ended:
                self.live -= 1

    async def status(self, created: dict, status: str, seq: int, **extra: str) -> None:
        params = {"CallSid": created["sid"], "AccountSid": ACCOUNT_SID, "CallStatus": status,
                  "SequenceNumber": str(seq), "To": created["To"], "From": created["From"], **extra}
        url = created["StatusCallback"]
        async with httpx.AsyncClient() as client:
            r = await client.post(url, data=params,
                                  headers={"X-Twilio-Signature": self.validator.compute_signature(url, params)})
        assert r.status_code == 204, r.text

    def max_per_second(self) -> int:
        times = sorted(t for t, _ in self.created)
        return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


def runner(server, db_url: str, contacts_path, window: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "callgate.cli", "campaign", "run", str(contacts_path), "--id", CAMPAIGN,
        "--workflow", "voicemail_drop", "--message", "m.wav", "--rate", str(RATE),
        "--max-concurrent", str(MAX_CONCURRENT), "--window", window, "--tz-column", "tz",
        "--retries", "busy:1", "--retry-after", "1s", "--claim-timeout", "3s", "--no-wait", "--quiet",
        "--server", server.base_url, "--database-url", db_url, "--api-key", API_KEY,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)



@pytest.mark.timeout(240)
async def test_campaign_of_200_contacts_limits_windows_retries_kill_and_resume(server_factory, tmp_path, database_url):
    """SQLite: one runner, killed halfway, then run again. PostgreSQL: two runners share the campaign from
    the start, one is killed halfway, the other finishes; a third run finds nothing left to call."""
    rows = contact_plan()
    contacts = tmp_path / "contacts.csv"
    with open(contacts, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["phone", "tz", "name", "plan"])
        w.writeheader()
        w.writerows(rows)
    plans = {r["phone"]: r["plan"] for r in rows}
    save_wav(tmp_path / "messages" / "m.wav", to_int16(telephone_channel(speech("Call us back."))))
    greeting = make_voicemail_greeting("Hi, this is Sam. Leave a message after the tone.", beep_hz=850, beep_secs=0.4)
    hello = telephone_channel(concat(silence(0.4), speech("Hello? Who is this?"), silence(2.5)))
    twilio = Twilio(plans, {"machine": to_int16(greeting.audio), "human": to_int16(hello)})
    window = window_around_now()
    db_url = database_url
    shared = db_url.startswith("postgresql")

    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, on_create=twilio.on_create) as rest:
        twilio.rest = rest
        server = server_factory(twilio_api_base_url=rest.base_url, twilio_from_number="+14155550100",
                                database_url=db_url, api_rate_limit="1000/second",
                                place_call_rate_limit="1000/second", **FAST_STREAM)
        first = runner(server, db_url, contacts, window)
        partner = runner(server, db_url, contacts, window) if shared else None
        while len(twilio.created) < 80:  # halfway: kill the runner mid-flight, calls still live
            assert first.poll() is None, first.stdout.read()
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait)
        killed_after = len(twilio.created)
        await asyncio.sleep(0.5)

        if partner is not None:
            out, _ = await asyncio.to_thread(partner.communicate, timeout=200)
            assert partner.returncode == 0, out
        second = runner(server, db_url, contacts, window)
        out2, _ = await asyncio.to_thread(second.communicate, timeout=200)
        assert second.returncode == 0, out2
        out = out if partner is not None else out2
        while twilio.live:
            await asyncio.sleep(0.05)

    called: dict[str, int] = {}
    for _, to in twilio.created:
        called[to] = called.get(to, 0) + 1
    expected = {r["phone"]: (2 if r["plan"] == "busy" else 1) for r in rows
                if r["plan"] not in ("invalid", "outside")}
    print(f"killed after {killed_after} calls; {len(twilio.created)} calls in all; "
          f"max {twilio.max_per_second()} calls created in any 1 s (limit {RATE:g}); "
          f"max {twilio.max_live} live at once (limit {MAX_CONCURRENT})")
    assert called == expected  # every callable contact, each exactly once (busy: once more, the retry)
    assert twilio.max_per_second() <= RATE
    assert twilio.max_live <= MAX_CONCURRENT
    assert "wait for their calling window" in out

    # The report: outcome table, CSV and PNG.
    report = subprocess.run(
        [sys.executable, "-m", "callgate.cli", "campaign", "report", CAMPAIGN, "--out", str(tmp_path / "report"),
         "--database-url", db_url],
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}, capture_output=True, text=True, timeout=60,
    )
    assert report.returncode == 0, report.stderr
    print(report.stdout)
    with open(tmp_path / "report" / f"{CAMPAIGN}.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == N_CONTACTS
    by_phone = {r["phone"]: r for r in table}
    for r in rows:
        got = by_phone.get(r["phone"]) if r["plan"] != "invalid" else next(t for t in table if t["row"] == str(
            rows.index(r) + 2))
        want = {"invalid": "invalid", "outside": "pending", "human": "human", "machine": "machine"}.get(r["plan"], r["plan"])
        assert got["outcome"] == want, (r, got)
        if r["plan"] == "machine":
            assert got["message_played"] == "True", str(got)
    assert (tmp_path / "report" / f"{CAMPAIGN}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "machine" in report.stdout and "busy" in report.stdout


def test_rule_parsing():
    assert parse_window("09:00-20:00") == (540, 1200)
    assert parse_retries("busy,no-answer:2") == {"busy": 2, "no-answer": 2}
    assert parse_retries("busy") == {"busy": 1}
    with pytest.raises(ValueError):
        parse_window("9-20")
    with pytest.raises(ValueError):
        parse_retries("human")


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    from callgate.cli import main

    db = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    no_phone = tmp_path / "no_phone.csv"
    no_phone.write_text("name\nx\n")
    cases = [
        (["campaign", "report", "nope", "--database-url", db], "no campaign 'nope'"),
        (["campaign", "run", str(tmp_path / "missing.csv"), "--database-url", db], "no contacts file"),
        (["campaign", "run", str(no_phone), "--database-url", db], "no phone column"),
        (["campaign", "run", str(no_phone), "--window", "9-5", "--database-url", db], "window must look like"),
        (["campaign", "run", str(no_phone), "--rate", "0", "--database-url", db], "--rate must be > 0"),
        (["campaign", "report", "x", "--database-url", "postgresql+asyncpg://u@127.0.0.1:9/x"], "database"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
