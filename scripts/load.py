"""Load: N concurrent real-time simulated calls through a real `callgate serve`, on loopback only.

For each workflow (voicemail_drop, then the agent against the vendor stand-ins) it runs a warm-up, then
the steps (--calls / --agent-calls) until one breaks a bar, halves the interval down to --resolution
calls, and (voicemail_drop) always runs the largest step. Calls start at --cps a second (a dialer's ramp), all from one
lean generator process (simulator/loadphone.py, its CPU printed). Each step prints: completed /
failed, the server's reaction time on the call clock (voicemail_drop: beep end -> first message audio;
agent: end of the caller's turn, after the greeting of an amd=off call -> first audio of the reply)
p50/p95/p99 against the workflow's bar (--bar-ms 100; --agent-bar-ms 800, the seeds' voice-to-voice
budget), playback underruns, the server's
event-loop lag p99 (from its own /metrics histogram), handshake p99, the server's CPU per call-second
(and the generator's) and memory per call. It starts the server itself (`--workers`, a throw-away SQLite database, a Twilio REST
stand-in in this process), so nothing leaves the machine. Bounded: at most 400 calls per step and
--max-secs in all.

    python scripts/load.py                       # everything: both workflows, steps up to 150
    python scripts/load.py --workflow voicemail_drop --calls 25,50 --workers 2 --cps 10

At the end it prints the largest N meeting every bar and the first N breaking one, per workflow, and
the /metrics counters scraped while the most calls were live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
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
AGENT_TURN = "I would like to move my appointment to Friday."  # no comma: no pause inside the turn
AGENT_TURN_AT_SECS = 10.0  # the agent's greeting (the example agent's first_message) is over by then
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


# --- the simulated calls: one lean generator process (simulator/loadphone.py) ----------------------


def _client(k: int, jobs: list[dict], url: str, rest_port: int, out: multiprocessing.Queue) -> None:
    """One load-generator process: its calls on one loop, and the REST stand-in their hang-ups reach."""
    import resource

    from loguru import logger

    from simulator.loadphone import LoadPhone, PreparedAudio, summarize
    from simulator.rest import RestStandIn

    logger.remove()

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def main() -> dict:
        import numpy as np

        audio = PreparedAudio.from_pcm(np.load(jobs[0]["audio"]))  # once, for every call
        async with RestStandIn(port=rest_port, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest, \
                LoadPhone(url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, rest=rest) as phone:
            loop = asyncio.get_running_loop()
            t0, cpu0 = loop.time(), cpu()  # the calls' cost, not the imports' and the set-up's

            async def one(i: int, job: dict):
                await asyncio.sleep(max(0.0, t0 + job["delay"] - loop.time()))
                # the router reads the client process from the CallSid
                return await phone.call(audio, params=job["params"], tail_secs=job["tail_secs"],
                                        call_sid=f"CA{k:02x}{i:030x}", anchor_ms=job["anchor_ms"],
                                        reply_after_ms=job["reply_after_ms"])

            calls = await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))
            results = summarize(calls, jobs[0]["anchor_ms"], jobs[0]["must_hang_up"], jobs[0]["reply_after_ms"])
            return {"results": results, "late_ticks": phone.late_ticks,
                    "max_tick_lag_ms": phone.max_tick_lag_ms, "cpu_s": cpu() - cpu0}

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


def run_step(n: int, args, server_url: str, workload: dict, client_ports: list[int]) -> dict:
    """Start n calls at args.cps calls a second (a dialer's ramp) and wait for all of them."""
    spacing = (args.ramp / max(n, 1)) if args.ramp is not None else 1.0 / args.cps
    jobs = [{"delay": spacing * i, "audio": workload["audio"], "anchor_ms": workload["anchor_ms"],
             "params": workload["params"], "tail_secs": workload["tail_secs"],
             "must_hang_up": workload["must_hang_up"], "reply_after_ms": workload["reply_after_ms"]}
            for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    clients = len(client_ports)
    procs = [ctx.Process(target=_client, args=(k, jobs[k::clients], f"{server_url}/twiml", client_ports[k], queue))
             for k in range(clients) if jobs[k::clients]]
    for p in procs:
        p.start()
    out: dict = {"results": [], "cpu_s": 0.0, "late_ticks": 0, "max_tick_lag_ms": 0.0, "ramp_s": spacing * (n - 1)}
    for _ in procs:
        part = queue.get(timeout=args.max_secs)
        out["results"].extend(part["results"])
        out["cpu_s"] += part["cpu_s"]
        out["late_ticks"] += part["late_ticks"]
        out["max_tick_lag_ms"] = max(out["max_tick_lag_ms"], part["max_tick_lag_ms"])
    for p in procs:
        p.join(10)
    return out


# --- metrics -----------------------------------------------------------------------------------------

# The counters issue 10 asks for, as `callgate_*` families (buckets are summarised).
SHOWN_METRICS = (
    "active_calls", "calls", "amd_verdicts", "amd_decision_seconds", "beeps", "beep_to_message_seconds",
    "marks", "actions", "stream_events", "stream_audio_seconds", "rejected", "vendor_errors",
    "db_queue_depth", "db_writes", "event_loop_lag_seconds", "webhooks",
)


def metrics_lines(text: str) -> list[str]:
    """The scrape's callgate counters, one line each; histograms as count, mean and p50/p99 bucket."""
    from prometheus_client.parser import text_string_to_metric_families

    lines = []
    for fam in text_string_to_metric_families(text):
        name = fam.name.removeprefix("callgate_")
        if not fam.name.startswith("callgate_") or not any(name.startswith(m) for m in SHOWN_METRICS):
            continue
        if fam.type == "histogram":
            groups: dict[tuple, dict] = {}
            for smp in fam.samples:
                labels = tuple(sorted((k, v) for k, v in smp.labels.items() if k != "le"))
                g = groups.setdefault(labels, {"buckets": {}, "count": 0.0, "sum": 0.0})
                if smp.name.endswith("_bucket"):
                    g["buckets"][float(smp.labels["le"])] = smp.value
                elif smp.name.endswith("_count"):
                    g["count"] = smp.value
                elif smp.name.endswith("_sum"):
                    g["sum"] = smp.value
            for labels, g in groups.items():
                if not g["count"]:
                    continue
                q = {p: quantile_from_buckets({}, g["buckets"], p) for p in (0.5, 0.99)}
                lbl = ",".join(f"{k}={v}" for k, v in labels)
                lines.append(f"{fam.name}{{{lbl}}} count {g['count']:.0f} mean {g['sum'] / g['count']:.3f} s "
                             f"p50 <= {q[0.5]:g} s p99 <= {q[0.99]:g} s")
        else:
            for smp in fam.samples:
                if smp.name.endswith("_created"):
                    continue
                lbl = ",".join(f"{k}={v}" for k, v in sorted(smp.labels.items()))
                lines.append(f"{smp.name}{{{lbl}}} {smp.value:g}")
    return lines


def scrape(base: str) -> str:
    return httpx.get(f"{base}/metrics", timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}).text


def active_calls(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("callgate_active_calls "):
            return float(line.split()[1])
    return 0.0


# --- main --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bar_ms(args, workflow: str) -> float:
    """The reaction p99 bar: the beep bar for voicemail_drop, the voice-to-voice budget for the agent."""
    return args.bar_ms if workflow == "voicemail_drop" else args.agent_bar_ms


def make_workload(workflow: str, work: Path, agent: str | None, message_secs: float = 0.0) -> dict:
    """The audio every call of a workflow plays, the anchor its reaction is timed from, its parameters."""
    import numpy as np

    if workflow == "voicemail_drop":
        greeting = make_voicemail_greeting("Hi, you have reached Sam. Please leave a message after the tone.",
                                           beep_hz=850, beep_secs=0.5)
        audio, anchor_ms = to_int16(greeting.audio), greeting.beep_offset_ms
        params = {"message": "m.wav"}
    else:
        # Voice-to-voice, as the seeds' budget counts it: the end of a caller's turn -> the agent's
        # first audio. The call skips AMD (amd=off, an inbound call; AMD's own latency is the
        # amd_decision_seconds histogram), so the agent greets at once (~7.5 s from the TTS stand-in);
        # the caller answers after the greeting, and the reply to that turn is what is timed.
        turn = speech(AGENT_TURN)
        audio = to_int16(telephone_channel(concat(silence(AGENT_TURN_AT_SECS), turn, silence(6.0))))
        anchor_ms = (AGENT_TURN_AT_SECS + len(turn) / 8000) * 1000
        params = {"workflow": "agent", "amd": "off", **({"agent": agent} if agent else {})}
    path = work / f"{workflow}.npy"
    np.save(path, audio)
    # voicemail_drop hangs up after the message: Twilio streams until then (a long tail, so a slow server
    # shows as slow, not failed). The agent keeps talking to a silent caller: its call ends with the audio.
    vm = workflow == "voicemail_drop"
    return {"audio": str(path), "anchor_ms": anchor_ms, "params": params,
            "reply_after_ms": None if vm else AGENT_TURN_AT_SECS * 1000,
            "tail_secs": 20.0 + message_secs if vm else 2.0,
            "must_hang_up": vm,
            "audio_s": len(audio) / 8000}


class Run:
    """The server under load and the bookkeeping of the steps run against it."""

    def __init__(self, args, server: subprocess.Popen, base: str, client_ports: list[int], deadline: float):
        self.args, self.server, self.base, self.client_ports, self.deadline = args, server, base, client_ports, deadline
        self.rows: list[dict] = []

    def wait_idle(self, secs: float = 30.0) -> None:
        """The previous step's calls are all gone from the server (their teardown is not this step's cost)."""
        until = time.monotonic() + secs
        while time.monotonic() < until:
            try:
                if active_calls(scrape(self.base)) == 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

    def step(self, workflow: str, n: int, workload: dict) -> dict:
        args, base = self.args, self.base
        self.wait_idle()
        pids = proc_tree(self.server.pid)
        lag0, cpu0, mem0 = lag_histogram(base), cpu_secs(pids), rss_mb(pids)
        t0 = time.perf_counter()
        live: dict = {}

        def scraper() -> None:
            """Keep the first scrape in which every call of the step is live (else the fullest one)."""
            until = time.monotonic() + (args.ramp or n / args.cps) + 60
            while time.monotonic() < until and not live.get("done"):
                try:
                    text = scrape(base)
                except httpx.HTTPError:
                    time.sleep(0.5)
                    continue
                if active_calls(text) >= live.get("active", -1):
                    live.update(text=text, active=active_calls(text))
                if live["active"] >= n:
                    break
                time.sleep(0.25)

        import threading

        th = threading.Thread(target=scraper, daemon=True)
        th.start()
        gen = run_step(n, args, base, workload, self.client_ports)
        live["done"] = True
        th.join(15)
        wall = time.perf_counter() - t0
        pids = proc_tree(self.server.pid)
        lag1, cpu1, mem1 = lag_histogram(base), cpu_secs(pids), rss_mb(pids)
        results = gen["results"]
        ok = [r for r in results if r["ok"]]
        reactions = [r["reaction_ms"] for r in results if r.get("reaction_ms") is not None]
        walls = [r["wall_reaction_ms"] for r in results if r.get("wall_reaction_ms") is not None]
        call_s = sum(r.get("call_ms", 0) for r in results) / 1000 or 1.0
        lag_p99 = quantile_from_buckets(lag0, lag1, 0.99)
        row = {
            "workflow": workflow, "calls": n, "completed": len(ok), "failed": n - len(ok),
            "ramp_s": gen["ramp_s"], "cps": (n - 1) / gen["ramp_s"] if gen["ramp_s"] else None,
            "reaction_p50_ms": pct(reactions, 0.5), "reaction_p95_ms": pct(reactions, 0.95),
            "reaction_p99_ms": pct(reactions, 0.99),
            "wall_reaction_p50_ms": pct(walls, 0.5), "wall_reaction_p99_ms": pct(walls, 0.99),
            "underruns_per_call": statistics.mean([r.get("underruns", 0) for r in results]) if results else 0,
            "loop_lag_p99_ms": None if lag_p99 is None else lag_p99 * 1000,
            "handshake_p99_ms": pct([r["handshake_ms"] for r in results if "handshake_ms" in r], 0.99),
            "webhook_p99_ms": pct([r["webhook_ms"] for r in results if "webhook_ms" in r], 0.99),
            "server_cpu_s_per_call": (cpu1 - cpu0) / n, "server_cpu_cores": (cpu1 - cpu0) / wall,
            "server_cpu_ms_per_call_s": 1000 * (cpu1 - cpu0) / call_s,
            "client_cpu_s_per_call": gen["cpu_s"] / n, "client_cpu_ms_per_call_s": 1000 * gen["cpu_s"] / call_s,
            "client_late_ticks": gen["late_ticks"], "client_max_tick_lag_ms": gen["max_tick_lag_ms"],
            "server_rss_mb": mem1, "rss_mb_per_call": max(0.0, mem1 - mem0) / n, "wall_s": wall,
            "max_live_calls_scraped": live.get("active"),
            "errors": sorted({r["error"] for r in results if r.get("error")})[:3],
            "load_average": os.getloadavg()[0],
        }
        row["reaction_bar_ms"] = bar_ms(args, workflow)
        row["meets_bars"] = (row["failed"] == 0 and (row["reaction_p99_ms"] or 1e9) <= row["reaction_bar_ms"]
                             and (row["loop_lag_p99_ms"] or 1e9) <= args.lag_bar_ms)
        row["metrics"] = live.get("text", "")
        if args.metrics_out and row["metrics"]:
            suffix = args.metrics_out.suffix or ".txt"
            tag = "" if workflow == "voicemail_drop" else f"{workflow}-"
            args.metrics_out.with_name(f"{args.metrics_out.stem}-{tag}{n}{suffix}").write_text(row["metrics"])
        self.rows.append(row)
        self.print_row(row)
        return row

    def print_row(self, row: dict) -> None:
        if self.args.json:
            print(json.dumps({k: v for k, v in row.items() if k != "metrics"}), flush=True)
            return
        fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        print(f"{row['workflow']:>14} N={row['calls']:4d} (ramp {row['ramp_s']:.0f} s)  completed {row['completed']:4d}"
              f"  failed {row['failed']:3d}  reaction p50/p95/p99 {fmt(row['reaction_p50_ms'])}/"
              f"{fmt(row['reaction_p95_ms'])}/{fmt(row['reaction_p99_ms'])} ms (wall clock p50/p99 "
              f"{fmt(row['wall_reaction_p50_ms'])}/{fmt(row['wall_reaction_p99_ms'])} ms)  underruns/call "
              f"{row['underruns_per_call']:.1f}  loop lag p99 <= {fmt(row['loop_lag_p99_ms'])} ms  "
              f"handshake p99 {fmt(row['handshake_p99_ms'])} ms  peak live {fmt(row['max_live_calls_scraped'])}  "
              f"server CPU {row['server_cpu_s_per_call']:.2f} s/call {row['server_cpu_ms_per_call_s']:.1f} ms/call-s ({row['server_cpu_cores']:.2f} cores)  generator CPU {row['client_cpu_ms_per_call_s']:.1f}"
              f" ms/call-s (late ticks {row['client_late_ticks']}, max {row['client_max_tick_lag_ms']:.0f} ms)  RSS {row['server_rss_mb']:.0f} MB ({row['rss_mb_per_call']:.1f} MB/call)  "
              f"load avg {row['load_average']:.1f}  {'OK' if row['meets_bars'] else 'BREAKS'}", flush=True)
        for e in row["errors"]:
            print(f"    e.g. {e}")

    def search(self, workflow: str, steps: list[int], workload: dict) -> dict:
        """Run the steps up to the first that breaks a bar, then halve the interval down to --resolution."""
        last_ok, first_break = 0, None
        # Each worker loads the workflow's models on its first calls: a warm-up step, not counted (4 per
        # worker: the kernel, not load.py, picks the worker of each call, and a cold one stalls seconds).
        warm = self.args.workers * 4
        print(f"{workflow}: warm-up, {warm} calls (not counted)", flush=True)
        run_step(warm, self.args, self.base, workload, self.client_ports)
        for n in steps:
            if time.monotonic() > self.deadline:
                print("stopping: --max-secs reached")
                break
            if self.step(workflow, n, workload)["meets_bars"]:
                last_ok = n
            else:
                first_break = n
                break
        lo, hi = last_ok, first_break
        while hi is not None and hi - lo > self.args.resolution and time.monotonic() < self.deadline:
            mid = (lo + hi) // 2
            if self.step(workflow, mid, workload)["meets_bars"]:
                lo = mid
            else:
                hi = mid
        tested = {r["calls"] for r in self.rows if r["workflow"] == workflow}
        if workflow == "voicemail_drop" and max(steps) not in tested and time.monotonic() < self.deadline:
            self.step(workflow, max(steps), workload)  # the target N (150) is always measured and printed
        return {"workflow": workflow, "largest_ok": lo or None, "first_break": hi}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", default="25,50,100,150", help="voicemail_drop: comma-separated concurrent call counts")
    ap.add_argument("--agent-calls", default="5,10,25,50,100,150", help="agent: the steps of its search")
    ap.add_argument("--workflows", default="voicemail_drop,agent", help="which workflows to search, in order")
    ap.add_argument("--workflow", choices=["voicemail_drop", "agent"], help="only this workflow (its steps: --calls)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--agent", help="agent spec name for the agent workflow")
    ap.add_argument("--clients", type=int, default=1, help="load-generator processes (one drives hundreds of calls)")
    ap.add_argument("--cps", type=float, default=10.0, help="calls started per second (a dialer's ramp)")
    ap.add_argument("--ramp", type=float, help="instead of --cps: seconds over which each step's calls start")
    ap.add_argument("--resolution", type=int, default=10,
                    help="after the first step that breaks a bar, halve the interval down to this many calls")
    ap.add_argument("--max-secs", type=float, default=1800.0, help="bound on the whole run")
    ap.add_argument("--bar-ms", type=float, default=100.0, help="reaction p99 bar")
    ap.add_argument("--agent-bar-ms", type=float, default=800.0,
                    help="agent: reaction (caller turn end -> first bot audio) p99 bar; 800 ms is the seeds' "
                    "voice-to-voice budget (<500 natural, >800 delayed)")
    ap.add_argument("--lag-bar-ms", type=float, default=50.0, help="event-loop lag p99 bar")
    ap.add_argument("--token-file", action="store_true",
                    help="Stream-token claims in their own SQLite file (TOKEN_STORE_PATH), not the record database")
    ap.add_argument("--message-secs", type=float, default=20.0,
                    help="voicemail_drop's message length: longer than a step's ramp, so all of its calls are live "
                    "at once (0: one short sentence)")
    ap.add_argument("--json", action="store_true", help="one JSON object per step")
    ap.add_argument("--metrics-out", type=Path, help="save a /metrics scrape taken while each step's calls are live "
                    "(FILE gets -N, or -agent-N, appended before its suffix)")
    args = ap.parse_args()
    plan: list[tuple[str, list[int]]] = []
    workflows = [args.workflow] if args.workflow else [w.strip() for w in args.workflows.split(",") if w.strip()]
    for wf in workflows:
        if wf not in ("voicemail_drop", "agent"):
            ap.error(f"unknown workflow {wf!r}")
        text = args.calls if wf == "voicemail_drop" or args.workflow else args.agent_calls
        steps = sorted({int(x) for x in text.split(",") if x.strip()})
        if not steps or any(not 0 < n <= MAX_CALLS for n in steps):
            ap.error(f"call counts must be 1..{MAX_CALLS} each")
        plan.append((wf, steps))
    if args.cps <= 0 or (args.ramp is not None and args.ramp < 0):
        ap.error("--cps must be > 0 and --ramp >= 0")
    deadline = time.monotonic() + args.max_secs

    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="callgate-load-"))
    (work / "messages").mkdir()
    # A voicemail drop's message is tens of seconds long: each call lasts longer than a step's ramp, so
    # every one of its N calls is live at once (a 2 s message at 10 calls/s kept at most ~95 of 150 live).
    words = speech("Hi, this is Sam from the clinic, please call us back about your appointment. Goodbye.")
    message = np.tile(words, max(1, int(np.ceil(args.message_secs * 8000 / len(words))))) if args.message_secs else words
    save_wav(work / "messages" / "m.wav", to_int16(telephone_channel(message)))
    workloads = {wf: make_workload(wf, work, args.agent, len(message) / 8000) for wf, _ in plan}

    client_ports = [free_port() for _ in range(max(1, args.clients))]
    rest_url = f"http://127.0.0.1:{client_ports[0]}" if len(client_ports) == 1 else start_router(client_ports)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOST": "127.0.0.1", "PORT": str(port), "PUBLIC_BASE_URL": base,
           "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": rest_url, "MESSAGES_DIR": str(work / "messages"), "AGENTS_DIR": str(REPO / "agents"),
           "MESSAGE_CACHE_DIR": str(work / "cache"), "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'load.db'}",
           "LOG_LEVEL": "WARNING", "CALL_TIMEOUT_SECS": "90", "CALLGATE_API_KEYS": API_KEY}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("TOKEN_STORE_PATH", None)
    if args.token_file:
        env["TOKEN_STORE_PATH"] = str(work / "tokens.sqlite3")
    vendors = None
    if "agent" in workloads:
        # The agent's vendors: the Deepgram, OpenAI and Cartesia stand-ins (their wire protocols over
        # real sockets, in threads of this process) with no added latency, so the reaction is the server's.
        from simulator.vendors import CartesiaStandIn, DeepgramStandIn, OpenAIStandIn

        dg = DeepgramStandIn(transcriber=lambda _pcm, _rate: AGENT_TURN).start()
        oa = OpenAIStandIn().start()
        ct = CartesiaStandIn().start()
        vendors = (dg, oa, ct)
        env.update(DEEPGRAM_API_KEY="stand-in", DEEPGRAM_BASE_URL=dg.base_url, OPENAI_API_KEY="stand-in",
                   OPENAI_BASE_URL=oa.base_url, CARTESIA_API_KEY="stand-in", CARTESIA_URL=ct.url)
    finished = False
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
        pace = f"ramp {args.ramp:g} s per step" if args.ramp is not None else f"{args.cps:g} calls/s"
        print(f"callgate serve --workers {args.workers} on {base}; load generator: {args.clients} process(es), "
              f"{pace}; token claims in {'their own file' if args.token_file else 'the record database'}; bars: 0 failures, reaction p99 <= {args.bar_ms:g} ms (agent: "
              f"{args.agent_bar_ms:g} ms voice-to-voice), loop lag p99 <= {args.lag_bar_ms:g} ms; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        run = Run(args, server, base, client_ports, deadline)
        found = [run.search(wf, steps, workloads[wf]) for wf, steps in plan]
        print(f"\nsummary (bars: 0 failures, reaction p99 <= the workflow's bar, event-loop lag p99 <= "
              f"{args.lag_bar_ms:g} ms):")
        for f in found:
            print(f"  {f['workflow']:>14} (reaction p99 <= {bar_ms(args, f['workflow']):g} ms): largest N meeting every"
                  f" bar: {f['largest_ok'] or 'none of the steps run'};"
                  f" first N that breaks one: {f['first_break'] or 'none of the steps run'}")
        for wf, _ in plan:
            rows = [r for r in run.rows if r["workflow"] == wf and r["metrics"]]
            if rows:
                peak = max(rows, key=lambda r: r["max_live_calls_scraped"] or 0)
                print(f"\n/metrics scraped while {peak['max_live_calls_scraped']:.0f} {wf} calls were live"
                      f" (step N={peak['calls']}):")
                for line in metrics_lines(peak["metrics"]):
                    print("  " + line)
        if not args.json and any(f["workflow"] == "voicemail_drop" for f in found):
            first = [f["first_break"] for f in found if f["workflow"] == "voicemail_drop"]
            print(f"\nfirst N that breaks the bars (failures, p99 > {args.bar_ms:g} ms or lag p99 > "
                  f"{args.lag_bar_ms:g} ms): {first[0] if first and first[0] else 'none'}")
        finished = True
        return 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        for v in vendors or ():
            v.stop()
        if finished:  # the throw-away database, messages and server log; kept for a look when a run failed
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept for a look: {work} (server.log, load.db)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
