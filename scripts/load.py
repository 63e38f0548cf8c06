"""Load: N concurrent real-time simulated calls through a real `callgate serve`, on loopback only.

For each N in --calls it starts the calls (spread over --ramp seconds), waits for all of them, and
prints: completed / failed, the server's reaction time on the call clock (voicemail_drop: beep end ->
first message audio; agent: end of the caller's turn -> first bot audio) p50/p95/p99, playback
underruns, the server's event-loop lag p99 (from its own /metrics histogram), and the server's CPU and
memory per call. It starts the server itself (`--workers`, a throw-away SQLite database, a Twilio REST
stand-in in this process), so nothing leaves the machine. Bounded: at most 400 calls per step and
--max-secs in all.

    python scripts/load.py --calls 10,25,50 [--workers 2] [--workflow voicemail_drop|agent] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callgate.audio import save_wav, to_int16  # noqa: E402
from callgate.synth import concat, make_voicemail_greeting, silence, speech, telephone_channel  # noqa: E402

AUTH_TOKEN = "load-test-auth-token-0123456789ab"
API_KEY = "load-test-api-key-0123456789abcdef"
ACCOUNT_SID = "AC" + "1" * 32
MAX_CALLS = 400
LAG_BUCKETS_NAME = "callgate_event_loop_lag_seconds_bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the server under load -----------------------------------------------------------------------


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (the workers of `serve --workers N`)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def cpu_secs(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def lag_histogram(base_url: str) -> dict[float, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith(LAG_BUCKETS_NAME):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile_from_buckets(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of what was observed between two scrapes."""
    delta = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    for le, count in delta:
        if count >= q * total:
            return le
    return float("inf")


# --- the simulated calls (in client processes, so the generator is not the bottleneck) ------------


def _client(k: int, jobs: list[dict], url: str, rest_port: int, out: multiprocessing.Queue) -> None:
    """One load-generator process: its calls, and the REST stand-in their hang-ups reach (via the router)."""
    import secrets

    from loguru import logger

    from simulator.phone import simulate_call
    from simulator.rest import RestStandIn

    logger.remove()

    async def main() -> list[dict]:
        import numpy as np

        async with RestStandIn(port=rest_port, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:

            async def one(job: dict) -> dict:
                await asyncio.sleep(job["delay"])
                audio = np.load(job["audio"])
                t0 = time.perf_counter()
                try:
                    report = await simulate_call(
                        audio, url, speed=1.0, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                        params=job["params"], rest=rest, tail_secs=job["tail_secs"],
                        call_sid=f"CA{k:02x}" + secrets.token_hex(15),  # the router reads the client from it
                    )
                except Exception as e:  # a broken call is a result, not a crash of the generator
                    return {"ok": False, "error": f"{type(e).__name__}: {e}"}
                starts = report.of("media_start")
                reaction = starts[0]["t_ms"] - job["anchor_ms"] if starts else None
                return {
                    "ok": report.ok and bool(starts) and report.summary.get("ended_by") == "hangup",
                    "error": report.error or (None if starts else "no audio from the server"),
                    "reaction_ms": reaction,
                    "underruns": max(0, len(starts) - 1),
                    "wall_s": time.perf_counter() - t0,
                }

            return await asyncio.gather(*(one(j) for j in jobs))

    out.put(asyncio.run(main()))


def start_router(client_ports: list[int]) -> str:
    """Twilio's REST API for the server: forwards each request to the stand-in of the client process
    that owns the call (CallSid 'CA' + 2 hex digits of the client index)."""
    import threading

    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path = scope["path"]
        sid = path.rsplit("/Calls/", 1)[-1].split(".", 1)[0] if "/Calls/" in path else ""
        k = int(sid[2:4], 16) if len(sid) > 4 else 0
        headers = {k_.decode(): v.decode() for k_, v in scope["headers"] if k_.lower() not in (b"host", b"content-length")}
        async with httpx.AsyncClient() as client:
            r = await client.request(scope["method"], f"http://127.0.0.1:{client_ports[k % len(client_ports)]}{path}",
                                     content=body, headers=headers, timeout=10)
        await send({"type": "http.response.start", "status": r.status_code,
                    "headers": [(b"content-type", r.headers.get("content-type", "application/json").encode())]})
        await send({"type": "http.response.body", "body": r.content})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}"


def run_step(n: int, args, server_url: str, audio_path: str, anchor_ms: float, params: dict,
             client_ports: list[int]) -> list[dict]:
    jobs = [{"delay": args.ramp * i / max(n, 1), "audio": audio_path, "anchor_ms": anchor_ms, "params": params,
             "tail_secs": 5.0} for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    clients = len(client_ports)
    procs = [ctx.Process(target=_client, args=(k, jobs[k::clients], f"{server_url}/twiml", client_ports[k], queue))
             for k in range(clients) if jobs[k::clients]]
    for p in procs:
        p.start()
    results: list[dict] = []
    for _ in procs:
        results.extend(queue.get(timeout=args.max_secs))
    for p in procs:
        p.join(10)
    return results


# --- main --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", default="10,25,50", help="comma-separated concurrent call counts")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workflow", default="voicemail_drop", choices=["voicemail_drop", "agent"])
    ap.add_argument("--agent", help="agent spec name for --workflow agent")
    ap.add_argument("--clients", type=int, default=2, help="load-generator processes")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which each step's calls start")
    ap.add_argument("--max-secs", type=float, default=900.0, help="bound on the whole run")
    ap.add_argument("--bar-ms", type=float, default=100.0, help="reaction p99 bar")
    ap.add_argument("--lag-bar-ms", type=float, default=50.0, help="event-loop lag p99 bar")
    ap.add_argument("--json", action="store_true", help="one JSON object per step")
    ap.add_argument("--metrics-out", type=Path, help="save a /metrics scrape taken while each step's calls are live "
                    "(FILE gets -N appended before its suffix)")
    args = ap.parse_args()
    steps = [int(x) for x in args.calls.split(",") if x.strip()]
    if not steps or any(not 0 < n <= MAX_CALLS for n in steps):
        ap.error(f"--calls must be 1..{MAX_CALLS} each")
    deadline = time.monotonic() + args.max_secs

    work = Path(tempfile.mkdtemp(prefix="callgate-load-"))
    (work / "messages").mkdir()
    import numpy as np

    if args.workflow == "voicemail_drop":
        greeting = make_voicemail_greeting("Hi, you have reached Sam. Please leave a message after the tone.",
                                           beep_hz=850, beep_secs=0.5)
        audio, anchor_ms = to_int16(greeting.audio), greeting.beep_offset_ms
        save_wav(work / "messages" / "m.wav", to_int16(telephone_channel(speech("Please call us back. Goodbye."))))
        params = {"message": "m.wav"}
    else:
        turn = speech("Hello? Yes, this is Dana. Who is calling?")
        audio = to_int16(telephone_channel(concat(silence(0.3), turn, silence(8.0))))
        anchor_ms = (0.3 + len(turn) / 8000) * 1000
        params = {"workflow": "agent", **({"agent": args.agent} if args.agent else {})}
    audio_path = str(work / "call.npy")
    np.save(audio_path, audio)

    client_ports = [free_port() for _ in range(max(1, args.clients))]
    router = start_router(client_ports)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOST": "127.0.0.1", "PORT": str(port), "PUBLIC_BASE_URL": base,
           "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": router, "MESSAGES_DIR": str(work / "messages"),
           "MESSAGE_CACHE_DIR": str(work / "cache"), "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'load.db'}",
           "LOG_LEVEL": "WARNING", "CALL_TIMEOUT_SECS": "40", "CALLGATE_API_KEYS": API_KEY}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "callgate.cli", "serve", "--workers", str(args.workers)],
                              env=env, cwd=work, stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            print("server did not start; see", work / "server.log")
            return 1
        print(f"callgate serve --workers {args.workers} on {base}; {args.workflow}; clients {args.clients}")
        first_break = None
        for n in steps:
            if time.monotonic() > deadline:
                print("stopping: --max-secs reached")
                break
            pids = proc_tree(server.pid)
            lag0, cpu0, mem0 = lag_histogram(base), cpu_secs(pids), rss_mb(pids)
            t0 = time.perf_counter()
            scraper = None
            if args.metrics_out:
                import threading

                out = args.metrics_out.with_name(f"{args.metrics_out.stem}-{n}{args.metrics_out.suffix or '.txt'}")

                def scrape(out: Path = out, n: int = n) -> None:
                    """Save the first scrape in which every call of the step is live (or the last one tried)."""
                    text, until = "", time.monotonic() + args.ramp + 60
                    while time.monotonic() < until:
                        text = httpx.get(f"{base}/metrics", timeout=10,
                                         headers={"Authorization": f"Bearer {API_KEY}"}).text
                        if f"callgate_active_calls {float(n)}" in text:
                            break
                        time.sleep(0.2)
                    out.write_text(text)

                scraper = threading.Thread(target=scrape, daemon=True)
                scraper.start()
            results = run_step(n, args, base, audio_path, anchor_ms, params, client_ports)
            if scraper is not None:
                scraper.join(70)
            wall = time.perf_counter() - t0
            pids = proc_tree(server.pid)
            lag1, cpu1, mem1 = lag_histogram(base), cpu_secs(pids), rss_mb(pids)
            ok = [r for r in results if r["ok"]]
            reactions = [r["reaction_ms"] for r in results if r.get("reaction_ms") is not None]
            lag_p99 = quantile_from_buckets(lag0, lag1, 0.99)
            row = {
                "calls": n, "completed": len(ok), "failed": n - len(ok),
                "reaction_p50_ms": pct(reactions, 0.5), "reaction_p95_ms": pct(reactions, 0.95),
                "reaction_p99_ms": pct(reactions, 0.99),
                "underruns_per_call": statistics.mean([r.get("underruns", 0) for r in results]) if results else 0,
                "loop_lag_p99_ms": None if lag_p99 is None else lag_p99 * 1000,
                "server_cpu_s_per_call": (cpu1 - cpu0) / n, "server_cpu_cores": (cpu1 - cpu0) / wall,
                "server_rss_mb": mem1, "rss_mb_per_call": max(0.0, mem1 - mem0) / n, "wall_s": wall,
                "errors": sorted({r["error"] for r in results if r.get("error")})[:3],
            }
            meets = (row["failed"] == 0 and (row["reaction_p99_ms"] or 1e9) <= args.bar_ms
                     and (row["loop_lag_p99_ms"] or 1e9) <= args.lag_bar_ms)
            row["meets_bars"] = meets
            if not meets and first_break is None:
                first_break = n
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
                print(f"N={n:4d}  completed {row['completed']:4d}  failed {row['failed']:3d}  reaction p50/p95/p99 "
                      f"{fmt(row['reaction_p50_ms'])}/{fmt(row['reaction_p95_ms'])}/{fmt(row['reaction_p99_ms'])} ms  "
                      f"underruns/call {row['underruns_per_call']:.1f}  loop lag p99 <= {fmt(row['loop_lag_p99_ms'])} ms  "
                      f"CPU {row['server_cpu_s_per_call']:.2f} s/call ({row['server_cpu_cores']:.2f} cores)  "
                      f"RSS {row['server_rss_mb']:.0f} MB ({row['rss_mb_per_call']:.1f} MB/call)  "
                      f"{'OK' if meets else 'BREAKS'}", flush=True)
                for e in row["errors"]:
                    print(f"    e.g. {e}")
        print(f"first N that breaks the bars (failures, p99 > {args.bar_ms:g} ms or lag p99 > {args.lag_bar_ms:g} ms):"
              f" {first_break if first_break is not None else 'none of ' + args.calls}")
        return 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
