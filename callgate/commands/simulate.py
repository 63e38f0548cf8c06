"""Place a simulated Twilio call against a running server: AUDIO plays as the callee's side.

Posts the voice webhook, opens the <Connect><Stream> WebSocket and streams AUDIO (then silence) like
Twilio, plays back what the server sends, echoes marks, and can stand in for Twilio's REST API so the
server can hang up (start the server with TWILIO_API_BASE_URL=http://127.0.0.1:REST_PORT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from callgate.audio import AudioFormatError, load_audio, save_wav, ulaw_to_pcm
from callgate.cli import CliError, check_port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "audio", type=Path, metavar="AUDIO", nargs="?",
        help="WAV (any rate) or raw .ulaw: what the callee says (or --script)",
    )
    parser.add_argument(
        "--script", type=Path, metavar="FILE",
        help="a scripted caller (TOML/JSON, see simulator/script.py): lines said after the bot stops, over "
        "its audio (barge-in) or as backchannels; text is synthesized offline",
    )
    parser.add_argument(
        "--network-delay-ms", type=float, default=0.0, metavar="D",
        help="one-way delay on the WebSocket, both directions, like a WAN (default 0)",
    )
    parser.add_argument(
        "--url",
        required=True,
        help="server base URL (http://127.0.0.1:8080 -> POST /twiml), or the full webhook URL",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--fast", action="store_true", help="stream as fast as possible (event times stay in call time)"
    )
    pace.add_argument(
        "--speed", type=float, default=1.0, metavar="X", help="stream at X times real time (default 1)"
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON lines on stdout: one per event, then a summary"
    )
    parser.add_argument(
        "--auth-token", help="sign the webhook and WebSocket like Twilio (the server's TWILIO_AUTH_TOKEN)"
    )
    parser.add_argument("--account-sid", help="AccountSid to present (default: a random AC...)")
    parser.add_argument("--workflow", help="adds ?workflow=W to the webhook URL")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="adds ?K=V to the webhook URL (repeatable)",
    )
    parser.add_argument("--from", dest="from_number", default="+15005550006", help="From number")
    parser.add_argument("--to", dest="to_number", default="+15551230000", help="To number")
    parser.add_argument(
        "--rest-port",
        type=int,
        metavar="P",
        help="serve the Twilio REST stand-in on 127.0.0.1:P for this call (0 = any free port); Basic auth "
        "is checked when --account-sid and --auth-token are both given",
    )
    parser.add_argument(
        "--tail",
        type=float,
        default=20.0,
        metavar="SECS",
        help="silence streamed after AUDIO ends before hanging up (default 20)",
    )
    parser.add_argument(
        "--save-received", type=Path, metavar="WAV", help="write the audio the server sent to this WAV"
    )


def _params(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.workflow:
        params["workflow"] = args.workflow
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param expects K=V, got {item!r}")
        params[key] = value
    return params


def _print_human(ev: dict[str, Any]) -> None:
    extra = " ".join(
        f"{k}={v}" for k, v in ev.items() if k not in ("event", "t_ms") and v not in (None, "", [])
    )
    print(f"{ev['t_ms'] / 1000:8.2f}s  {ev['event']:<14} {extra}".rstrip(), flush=True)


def _print_summary(s: dict[str, Any]) -> None:
    from simulator.phone import PROBLEM_COUNTERS

    played = [m["name"] for m in s["marks"] if m["played"]]
    cancelled = [m["name"] for m in s["marks"] if not m["played"]]
    first = "-" if s["first_media_t_ms"] is None else f"{s['first_media_t_ms'] / 1000:.2f}s"
    print(f"call {s['call_sid']}: ended by {s['ended_by']} at {s['duration_ms'] / 1000:.2f}s call time")
    print(
        f"  server audio: first at {first}, played {s['played_ms'] / 1000:.2f}s, cleared {s['cleared_ms'] / 1000:.2f}s, "
        f"unplayed at end {s['unplayed_ms'] / 1000:.2f}s"
    )
    print(f"  marks played: {', '.join(played) or '-'}; not played: {', '.join(cancelled) or '-'}")
    problems = {k: s[k] for k in PROBLEM_COUNTERS if s[k]}
    if problems:
        print("  protocol problems: " + ", ".join(f"{k}={v}" for k, v in problems.items()))
    for u in s["updates"]:
        print(f"  update at {u['t_ms'] / 1000:.2f}s: {u['twiml'] or u['url']}")


async def _simulate(args: argparse.Namespace, audio: Any, params: dict[str, str], script: Any = None) -> Any:
    from simulator.phone import simulate_call
    from simulator.rest import RestStandIn

    on_event = (lambda ev: print(json.dumps(ev), flush=True)) if args.json else _print_human
    kwargs: dict[str, Any] = {
        "speed": None if args.fast else args.speed,
        "auth_token": args.auth_token,
        "account_sid": args.account_sid,
        "params": params,
        "tail_secs": args.tail,
        "on_event": on_event,
        "script": script,
        "network_delay_ms": args.network_delay_ms,
        "from_number": args.from_number,
        "to_number": args.to_number,
    }
    if args.rest_port is None:
        return await simulate_call(audio, args.url, **kwargs)
    rest = RestStandIn(args.rest_port, account_sid=args.account_sid, auth_token=args.auth_token)
    try:
        await rest.start()
    except OSError as e:
        raise CliError(
            f"cannot serve the REST stand-in on 127.0.0.1:{args.rest_port}: {e.strerror or e}"
        ) from None
    try:
        if not args.json:
            print(f"Twilio REST stand-in at {rest.base_url}", flush=True)
        return await simulate_call(audio, args.url, rest=rest, **kwargs)
    finally:
        await rest.stop()


def caller_latency(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per answered line, as the caller heard it: end of the line -> the bot's next audio (call time)."""
    out = []
    for i, ev in enumerate(events):
        if ev["event"] != "caller_line" or ev.get("kind") != "line":
            continue
        nxt = next((e for e in events[i + 1 :] if e["event"] == "bot_audio_start" and e["t_ms"] >= ev["end_ms"]), None)
        if nxt is not None:
            out.append({"line_end_ms": ev["end_ms"], "bot_audio_ms": nxt["t_ms"], "voice_to_voice_ms": nxt["t_ms"] - ev["end_ms"]})
    return out


async def _server_record(url: str, call_sid: str) -> dict[str, Any] | None:
    """The server's own view (GET /calls/{sid}: transcript, per-turn latency parts), if it answers."""
    from urllib.parse import urlsplit

    import httpx

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    try:
        async with httpx.AsyncClient(timeout=3.0, trust_env=False) as client:
            for _ in range(30):  # the record completes just after the socket closes
                r = await client.get(f"{base}/calls/{call_sid}")
                if r.status_code != 200:
                    return None
                record = r.json()
                if record.get("status") == "completed":
                    break
                await asyncio.sleep(0.1)
    except (httpx.HTTPError, ValueError):
        return None
    return {k: record.get(k) for k in ("outcome", "transcript", "latency")}


def run(args: argparse.Namespace) -> int:
    if not args.fast and not args.speed > 0:
        raise CliError("--speed must be > 0")
    if args.tail < 0:
        raise CliError("--tail must be >= 0")
    if args.network_delay_ms < 0:
        raise CliError("--network-delay-ms must be >= 0")
    if args.network_delay_ms and args.fast:
        raise CliError("--network-delay-ms needs a paced call: use --speed, not --fast")
    if (args.audio is None) == (args.script is None):
        raise CliError("give AUDIO or --script (one of them)")
    check_port(args.rest_port, "--rest-port")
    if args.save_received is not None and args.save_received.is_dir():
        raise CliError(f"--save-received {args.save_received}: a folder, not a WAV file")
    params = _params(args)
    script = None
    if args.script is not None:
        from simulator.script import ScriptError, load_script

        try:
            script = load_script(args.script)
        except ScriptError as e:
            raise CliError(str(e)) from None
        audio = np.zeros(0, dtype=np.int16)
    else:
        try:
            audio = load_audio(args.audio)
        except AudioFormatError as e:
            raise CliError(str(e)) from None
    report = asyncio.run(_simulate(args, audio, params, script))
    if script is not None:
        report.summary["latency"] = caller_latency(report.events)
        report.summary["server"] = asyncio.run(_server_record(args.url, report.summary["call_sid"]))
    if args.json:
        print(json.dumps(report.summary), flush=True)
    else:
        _print_summary(report.summary)
    if args.save_received:
        try:
            save_wav(args.save_received, np.frombuffer(ulaw_to_pcm(report.received_ulaw), dtype=np.int16))
        except OSError as e:
            raise CliError(f"cannot write {args.save_received}: {e.strerror or e}") from None
    if not report.ok:
        raise CliError(report.error or "call rejected")
    sys.stdout.flush()
    return 0
