"""Start the server on localhost, place simulated calls into it, and print what happened.

Each scenario's audio is generated offline (espeak-ng and flite voices through a telephone channel;
the talking callers use flite's awb and rms, which the offline STT understands: it garbled the espeak
voices' lines, "Yes, I need to move my appointment." -> "yeah the one"); the calls
run concurrently through the real server over real WebSockets, with the simulator standing in for
Twilio's Media Streams and REST API.

The conversation rows run the `agent` workflow on its offline default (no keys: pocketsphinx STT, the
scripted dialog server, the offline voice) with scripted callers (simulator/script.py): three turns,
a barge-in, an "uh-huh" over the bot, and a voicemail after the beep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUTH_TOKEN = "demo-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "d" * 32
REP_NUMBER = "+15550100200"  # where a human is bridged with <Dial>
API_KEY = secrets.token_urlsafe(24)  # this run's control-API key (the server refuses GET /calls without one)


@dataclass
class Scenario:
    name: str
    description: str
    audio: np.ndarray  # int16, 8 kHz
    tail_secs: float
    beep_offset_ms: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument(
        "--speed", type=float, default=1.0,
        help="call pacing, x real time (default 1; the server plays audio in real time, so keep 1 for timings)",
    )
    parser.add_argument(
        "--no-conversations", dest="conversations", action="store_false",
        help="skip the agent conversation rows",
    )


@dataclass
class Conversation:
    name: str
    description: str
    script: dict  # simulator/script.py format
    params: dict[str, str]
    audio: np.ndarray | None = None  # a fixed far end instead of a script (the voicemail greeting)


def build_conversations() -> list[Conversation]:
    from callgate.audio import to_int16
    from callgate.synth import make_voicemail_greeting

    machine = make_voicemail_greeting(
        "Hi, you've reached Dana. Leave a message after the tone.", voice="en-us+f3", beep_hz=1000
    )
    agent = {"workflow": "agent", "agent": "example"}
    return [
        Conversation(
            "three turns", "a person answers 'Hello?' and talks with the agent",
            {"voice": "flite:awb", "tail_ms": 2000, "step": [
                {"say": "Hello?", "after": "start", "at_ms": 600},
                {"say": "Yes, I need to move my appointment.", "gap_ms": 1500},
                {"say": "Friday would be best.", "gap_ms": 1500},
                {"say": "In the morning please.", "gap_ms": 1500},
            ]},
            agent,
        ),
        Conversation(
            "barge-in", "cuts the greeting short; the context keeps only what was heard",
            {"voice": "flite:rms", "tail_ms": 4000, "step": [
                {"say": "Sorry, I really have to stop you right there.", "after": "bot_audio", "at_ms": 1800},
            ]},
            {**agent, "amd": "off"},
        ),
        Conversation(
            "'uh-huh' over the bot", "a backchannel mid-greeting: the bot goes on, no clear",
            {"voice": "en-gb+m1", "tail_ms": 2000, "step": [
                {"say": "uh-huh", "kind": "backchannel", "after": "bot_audio", "at_ms": 1800},
            ]},
            {**agent, "amd": "off"},
        ),
        Conversation("voicemail", "AMD hears a machine: the message after the beep", {}, agent,
                     audio=to_int16(machine.audio)),
    ]  # fmt: skip


def build_scenarios() -> list[Scenario]:
    from callgate.audio import to_int16
    from callgate.synth import concat, make_voicemail_greeting, silence, speech, telephone_channel

    with_beep = make_voicemail_greeting(
        "Hi, you've reached Maria Lopez. I can't take your call right now. "
        "Please leave a message after the tone.",
        voice="en-us+f2",
        beep_hz=1000,
        beep_secs=0.5,
    )
    no_beep = telephone_channel(
        concat(silence(0.4), speech("You have reached Tom Becker at Northside Plumbing. I am away from my desk. "
                                    "Leave me a message and I will call you back.", voice="en-gb+m3"), silence(0.3))
    )
    early = telephone_channel(concat(silence(0.3), speech("Hello?", voice="en-us+m1")))  # gone mid-word
    human = telephone_channel(concat(silence(0.7), speech("Hello?", voice="en-us+f4"), silence(4.0)))
    return [
        Scenario("voicemail + beep", "greeting, then a 1 kHz beep", to_int16(with_beep.audio), 25.0,
                 with_beep.beep_offset_ms),
        Scenario("voicemail, no beep", "greeting that ends in silence", to_int16(no_beep), 25.0),
        Scenario("caller hangs up early", "'Hello?' and gone", to_int16(early), 0.0),
        Scenario("a person answers", "'Hello?' then waits", to_int16(human), 6.0),
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, rest_url: str, workdir: Path) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": rest_url,
        "CONNECT_NUMBER": REP_NUMBER,
        "MESSAGE_CACHE_DIR": str(workdir / "cache"),
        "CALLGATE_API_KEYS": API_KEY,
        "TOKEN_STORE_PATH": str(workdir / "used-tokens.sqlite3"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'callgate.db'}",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "callgate.cli", "serve", "--workers", "1"], env=env, stdout=log, stderr=log
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early; see {workdir / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not become healthy in 60 s")


async def _run_conversations(convs: list[Conversation], port: int, rest) -> list[tuple]:
    """The conversation rows, two at a time (each runs in real time: its services answer on the wall clock)."""

    from simulator.control import wait_for_record
    from simulator.phone import simulate_call
    from simulator.script import parse_script

    base = f"http://127.0.0.1:{port}"

    async def one(c: Conversation) -> tuple:
        kwargs = dict(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, params=c.params, rest=rest)
        if c.audio is not None:
            report = await simulate_call(c.audio, f"{base}/twiml", tail_secs=20, **kwargs)
        else:
            report = await simulate_call(np.zeros(0, np.int16), f"{base}/twiml", script=parse_script(c.script),
                                         **kwargs)
        return c, report, await wait_for_record(base, report.summary["call_sid"], API_KEY)

    out = []
    for i in range(0, len(convs), 2):
        out += await asyncio.gather(*(one(c) for c in convs[i : i + 2]))
    return out


def _print_conversations(results: list[tuple]) -> bool:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="callgate demo: the agent workflow (offline default: no keys)", show_lines=True)
    for col in ("scenario", "what was said (caller / bot as heard)", "clears", "events", "outcome"):
        table.add_column(col)
    ok = True
    for conv, report, record in results:
        said = []
        for t in record.get("transcript", []):
            if t["role"] == "caller":
                said.append(f"[cyan]caller[/cyan] {t['text']}")
            else:
                cut = " [red](interrupted)[/red]" if t["interrupted"] else ""
                said.append(f"[green]bot[/green] {t['heard']}{cut}")
        clears = report.of("clear")
        clear_txt = "\n".join(f"{c['dropped_ms']} ms dropped; heard: {c['played_text']!r}" for c in clears) or "none"
        kinds = [e["event"] for e in record.get("events", [])]
        notable = [k for k in ("amd", "conversation_start", "barge_in", "interruption", "backchannel", "noise_ignored",
                               "background_ignored", "false_interruption_resumed", "play_message", "hangup") if k in kinds]
        if conv.name == "'uh-huh' over the bot":
            ok &= not clears
        if conv.name == "barge-in":
            inter = [e for e in record.get("events", []) if e["event"] == "interruption"]
            # the same words (the phone reports them from its word marks, without the punctuation)
            ok &= bool(clears) and bool(inter) and _words(inter[0]["heard_text"]) == _words(clears[0]["played_text"])
        outcome = record.get("outcome") or f"[red]no call record[/red] (call ended by {report.summary.get('ended_by')})"
        ok &= bool(record)
        table.add_row(f"{conv.name}\n[dim]{conv.description}[/dim]", "\n".join(said) or "-", clear_txt,
                      ", ".join(notable), outcome)
    Console(width=max(130, Console().width)).print(table)
    return ok


async def _run_calls(scenarios: list[Scenario], port: int, speed: float, rest) -> list[tuple]:
    import httpx

    from simulator.phone import simulate_call

    base = f"http://127.0.0.1:{port}"
    reports = await asyncio.gather(
        *[
            simulate_call(s.audio, f"{base}/twiml", speed=speed, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                          rest=rest, tail_secs=s.tail_secs)
            for s in scenarios
        ]
    )
    results = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        for scenario, report in zip(scenarios, reports, strict=True):
            record: dict = {}
            for _ in range(100):  # the server closes its record just after the socket
                r = await client.get(f"{base}/calls/{report.summary['call_sid']}")
                if r.status_code == 200 and r.json()["status"] == "completed":
                    record = r.json()
                    break
                await asyncio.sleep(0.1)
            results.append((scenario, report, record))
    return results


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f} s"


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w'-]", "", t).lower() for t in text.split()) if w]


def _print_table(results: list[tuple]) -> bool:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="callgate demo: voicemail_drop through the real server", show_lines=True)
    for col in ("scenario", "AMD verdict", "beep (server)", "message starts", "message mark", "hang-up", "outcome"):
        table.add_column(col)
    all_ok = True
    for scenario, report, record in results:
        events = {e["event"]: e for e in record.get("events", [])}
        beep = events.get("beep")
        beep_txt = f"{_fmt_ms(beep['onset_ms'])} @ {beep['hz']:.0f} Hz" if beep else "none"
        starts = report.of("media_start")
        start_txt = _fmt_ms(starts[0]["t_ms"]) if starts else "-"
        if starts and scenario.beep_offset_ms is not None:
            after = starts[0]["t_ms"] - scenario.beep_offset_ms
            start_txt += f"\n({after:+.0f} ms after beep end)"
            all_ok &= after >= 0
        if starts and "play_message" in events:
            start_txt += f"\ntrigger: {events['play_message'].get('trigger')}"
        marks = report.of("mark")
        mark_txt = ", ".join(f"{'played' if m['played'] else 'cancelled'} at {_fmt_ms(m['t_ms'])}" for m in marks) or "-"
        hangups = report.of("hangup")
        hang_txt = f"REST at {_fmt_ms(hangups[0]['t_ms'])}" if hangups else f"caller ({report.summary['ended_by']})"
        outcome = record.get("outcome", "?")
        amd = events.get("amd")
        amd_txt = f"{amd['label']} at {_fmt_ms(amd['t_ms'])}\n({amd['detector']})" if amd else "-"
        if report.summary.get("ended_by") == "update":
            hang_txt = "none: bridged with <Dial>"
        table.add_row(f"{scenario.name}\n[dim]{scenario.description}[/dim]", amd_txt, beep_txt, start_txt,
                      mark_txt, hang_txt, outcome)
    Console(width=max(130, Console().width)).print(table)
    return all_ok


def run(args: argparse.Namespace) -> int:
    from callgate.cli import CliError, check_port
    from simulator.rest import RestStandIn

    if not args.speed > 0:
        raise CliError("--speed must be > 0")
    check_port(args.port, "--port")
    print("callgate demo: generating call audio with offline voices ...", flush=True)
    try:
        scenarios = build_scenarios()
        conversations = build_conversations() if args.conversations else []
    except RuntimeError as e:  # a missing TTS engine or sound package
        raise CliError(f"{e} (run `make demo`, which installs them)") from e
    port = args.port or _free_port()

    async def main() -> tuple[list[tuple], list[tuple]]:
        async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
            with tempfile.TemporaryDirectory(prefix="callgate-demo-") as tmp:
                print(f"starting the server on http://127.0.0.1:{port} (Twilio REST stand-in at {rest.base_url}) ...",
                      flush=True)
                proc = await asyncio.to_thread(_start_server, port, rest.base_url, Path(tmp))
                try:
                    print(f"placing {len(scenarios)} simulated calls at {args.speed:g}x real time ...", flush=True)
                    calls = await _run_calls(scenarios, port, args.speed, rest)
                    if conversations:
                        print(f"placing {len(conversations)} conversation calls (real time) ...", flush=True)
                    return calls, await _run_conversations(conversations, port, rest)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()

    try:
        results, talks = asyncio.run(main())
    except RuntimeError as e:
        raise CliError(str(e)) from e
    ok = _print_table(results)
    if talks:
        ok &= _print_conversations(talks)
    print("server stopped.")
    return 0 if ok else 1
