"""Benchmark: server CPU per live voicemail_drop call, in ms per call-second and per 20 ms frame.

Runs N concurrent calls through the real per-call pipeline (`build_call_processors`, the objects the
server runs) in this one process, each fed Twilio's 20 ms packets (the greeting, a beep, then line
silence while the message plays, until the workflow hangs up), and divides the process's CPU time
(all threads, `getrusage`) by the call-seconds and frames that went through. CPU seconds are robust
on a shared machine where wall-clock throughput is not. The WebSocket transport and its JSON/base64
decoding are not in this figure (scripts/load.py measures the whole server).

    python scripts/bench_call_cpu.py [--calls 1,10,25] [--pace realtime|fast] [--ramp 1.0]

--pace realtime sends each call's frames on the wall clock (as Twilio does; run-time = call length);
--pace fast sends the next frame as soon as the previous one left the pipeline (lock-step, so every
decision is at the same audio time). It also prints, per N, the beep-end -> message-start delay on
the call's audio clock (what the frame size and the detectors allow) and the calls' outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from callgate.settings import Settings  # noqa: E402
from callgate.synth import make_voicemail_greeting  # noqa: E402
from pipelines.call import CallConfig  # noqa: E402
from pipelines.message import MessageCache  # noqa: E402
from pipelines.replay import replay_pcm  # noqa: E402


def cpu_secs() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_call(
    i: int, pcm: np.ndarray, settings: Settings, messages: MessageCache, pace: str, start_delay: float
) -> dict:
    await asyncio.sleep(start_delay)
    call = CallConfig(
        settings=settings, workflow="voicemail_drop", call_sid=f"CA{i:032d}", params={"workflow": "voicemail_drop"}
    )
    result = await replay_pcm(
        pcm, call, messages, tail_ms=20_000, frame_samples=FRAME_SAMPLES, speed=1.0 if pace == "realtime" else None
    )
    ev = {e["event"]: e for e in result.events}
    delay = None
    if "beep_end" in ev and "play_message" in ev:
        delay = ev["play_message"]["t_ms"] - ev["beep_end"]["t_ms"]
    return {"call_ms": result.summary["t_ms"], "outcome": result.summary["outcome"], "beep_to_msg_ms": delay}


async def run_step(n: int, pcm: np.ndarray, settings: Settings, messages: MessageCache, pace: str, ramp: float):
    rng = random.Random(n)
    delays = sorted(rng.uniform(0, ramp) for _ in range(n)) if n > 1 else [0.0]
    c0, w0 = cpu_secs(), time.perf_counter()
    calls = await asyncio.gather(*(one_call(i, pcm, settings, messages, pace, d) for i, d in enumerate(delays)))
    cpu, wall = cpu_secs() - c0, time.perf_counter() - w0
    call_secs = sum(c["call_ms"] for c in calls) / 1000
    frames = call_secs * SAMPLE_RATE / FRAME_SAMPLES
    outcomes: dict[str, int] = {}
    for c in calls:
        outcomes[str(c["outcome"])] = outcomes.get(str(c["outcome"]), 0) + 1
    lat = [c["beep_to_msg_ms"] for c in calls if c["beep_to_msg_ms"] is not None]
    lat_txt = f"median {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms" if lat else "none"
    print(
        f"N={n:>3} pace={pace:<8} CPU {cpu:6.2f} s over {call_secs:7.1f} call-s ({wall:5.1f} s wall): "
        f"{1000 * cpu / call_secs:5.1f} ms CPU per call-second, {1000 * cpu / frames:.3f} ms per 20 ms frame, "
        f"{cpu / wall:.2f} cores; outcomes {outcomes}; beep end -> message (audio clock) {lat_txt}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="1,10", help="comma-separated concurrent call counts (default 1,10)")
    p.add_argument("--pace", choices=("realtime", "fast"), default="fast")
    p.add_argument("--ramp", type=float, default=1.0, help="spread call starts over this many seconds")
    args = p.parse_args()
    counts = [int(c) for c in args.calls.split(",")]
    if max(counts) > 400:
        p.error("at most 400 calls")
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    greeting = make_voicemail_greeting(seed=1)
    pcm = greeting.int16()
    settings = Settings(_env_file=None)
    messages = MessageCache(Path("/tmp/callgate-bench-cache"))

    async def warm() -> None:  # load the models and the message once, outside the measurement
        await one_call(0, pcm[: SAMPLE_RATE // 2], settings, messages, "fast", 0.0)

    asyncio.run(warm())
    print(f"greeting {len(pcm) / SAMPLE_RATE:.1f} s (beep ends at {greeting.beep_offset_ms:.0f} ms), "
          f"message {messages.get(settings.voicemail_message).duration_ms / 1000:.1f} s")
    for n in counts:
        asyncio.run(run_step(n, pcm, settings, messages, args.pace, args.ramp))


if __name__ == "__main__":
    main()
