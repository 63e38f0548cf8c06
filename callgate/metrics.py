"""Prometheus metrics for `GET /metrics` (prometheus-client).

Each app owns a registry, so several servers in one test process do not share counters. Under
`callgate serve --workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before the workers start;
prometheus-client then keeps every value in per-process files and a scrape of any worker reports the
sum over all of them (gauges: `livesum`, live processes only).

Call metrics are fed from the call's public events (the same dicts `callgate replay --json` prints),
so the counters mean what the events mean.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Audio-time latencies: AMD verdicts land between ~0.3 s and the 5-8 s presets' caps.
DECISION_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
REACTION_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_INTERVAL_SECS = 0.1
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric callgate exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_calls = Gauge(
            "callgate_active_calls", "Calls with a live Media Stream", registry=r, multiprocess_mode="livesum"
        )
        self.calls = Counter(
            "callgate_calls", "Finished calls by workflow and outcome", ["workflow", "outcome"], registry=r
        )
        self.amd_verdicts = Counter(
            "callgate_amd_verdicts", "AMD verdicts by label and detector", ["workflow", "label", "detector"],
            registry=r,
        )
        self.amd_latency = Histogram(
            "callgate_amd_decision_seconds", "Audio time from answer to the AMD verdict", ["workflow", "label"],
            buckets=DECISION_BUCKETS, registry=r,
        )
        self.beeps = Counter("callgate_beeps", "Voicemail beeps detected", ["workflow"], registry=r)
        self.beep_reaction = Histogram(
            "callgate_beep_to_message_seconds", "Audio time from the beep's end to the message starting",
            buckets=REACTION_BUCKETS, registry=r,
        )
        self.marks = Counter(
            "callgate_marks", "Playback marks resolved: played or cancelled (clear)", ["result"], registry=r
        )
        self.actions = Counter("callgate_actions", "Workflow actions (play_message, hangup, ...)", ["action"],
                               registry=r)
        self.stream = Counter(
            "callgate_stream_events", "Media Stream anomalies and totals (gaps, duplicates, bad input, ...)",
            ["kind"], registry=r,
        )
        self.stream_audio = Counter(
            "callgate_stream_audio_seconds", "Call audio streamed, by direction (in: caller, out: played)",
            ["direction"], registry=r,
        )
        self.rejected = Counter("callgate_rejected", "Refused webhooks and streams by reason", ["reason"],
                                registry=r)
        self.webhooks = Counter("callgate_webhooks", "Voice webhooks by result", ["result"], registry=r)
        self.status_callbacks = Counter(
            "callgate_status_callbacks", "Twilio status callbacks by CallStatus", ["status"], registry=r
        )
        self.vendor_errors = Counter(
            "callgate_vendor_errors", "Errors from external services (twilio, stt, tts, llm)", ["vendor"],
            registry=r,
        )
        self.db_queue_depth = Gauge(
            "callgate_db_queue_depth", "Records waiting to be written", registry=r, multiprocess_mode="livesum"
        )
        self.db_errors = Counter("callgate_db_errors", "Failed record-writer batches", registry=r)
        self.db_dropped = Counter("callgate_db_dropped", "Records dropped because the queue was full", registry=r)
        self.db_refused = Counter(
            "callgate_db_refused", "Records the database refused on their own while it answered (dropped)", registry=r
        )
        self.loop_lag = Histogram(
            "callgate_event_loop_lag_seconds", "How late a 100 ms timer fires on the event loop",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.gc_pause = Histogram(
            "callgate_gc_pause_seconds", "Garbage-collector pauses (every thread waits) by generation",
            ["generation"], buckets=GC_BUCKETS, registry=r,
        )
        self.draining = Gauge("callgate_draining", "1 while the process drains after SIGTERM", registry=r,
                              multiprocess_mode="max")
        self._db_seen = (0, 0, 0)
        self._rejected_seen: dict[str, int] = {}

    # --- feeding -----------------------------------------------------------------------------

    def call_event(self, workflow: str, event: Mapping[str, Any], call_state: dict[str, Any]) -> None:
        """Count one public call event; `call_state` is a small per-call dict this method keeps."""
        name = event.get("event")
        if name == "amd":
            label = str(event.get("label", "unknown"))
            self.amd_verdicts.labels(workflow, label, str(event.get("detector") or "")).inc()
            if event.get("t_ms") is not None:
                self.amd_latency.labels(workflow, label).observe(float(event["t_ms"]) / 1000)
        elif name == "beep":
            self.beeps.labels(workflow).inc()
        elif name == "beep_end":
            call_state["beep_end_ms"] = event.get("t_ms")
        elif name == "mark":
            self.marks.labels("played" if event.get("played") else "cancelled").inc()
        elif name == "play_message":
            self.actions.labels("play_message").inc()
            if event.get("trigger") == "beep" and call_state.get("beep_end_ms") is not None:
                self.beep_reaction.observe(max(0.0, (float(event["t_ms"]) - call_state["beep_end_ms"]) / 1000))
        elif name not in ("speech_start", "speech_end") and name:
            self.actions.labels(str(name)[:48]).inc()  # workflow actions: hangup, connect, remote_hangup, ...

    def call_ended(self, workflow: str, outcome: str, counters: Mapping[str, int]) -> None:
        self.calls.labels(workflow, outcome).inc()
        for kind, value in counters.items():
            if kind == "audio_ms":
                self.stream_audio.labels("in").inc(value / 1000)
            elif kind == "media_out_ms":
                self.stream_audio.labels("out").inc(value / 1000)
            elif value and not kind.endswith("_ms"):
                self.stream.labels(kind).inc(value)

    def track_store(self, stats: Any, depth: int) -> None:
        """Mirror the record writer's stats (called on every lag-monitor tick)."""
        self.db_queue_depth.set(depth)
        errors, dropped, refused = self._db_seen
        if stats.db_errors > errors:
            self.db_errors.inc(stats.db_errors - errors)
        if stats.dropped > dropped:
            self.db_dropped.inc(stats.dropped - dropped)
        if stats.refused > refused:
            self.db_refused.inc(stats.refused - refused)
        self._db_seen = (stats.db_errors, stats.dropped, stats.refused)

    def track_rejections(self, counts: Mapping[str, int]) -> None:
        """Mirror the edge's rejection counts (callgate/edge/rejections.py) as a counter by reason."""
        for reason, n in counts.items():
            seen = self._rejected_seen.get(reason, 0)
            if n > seen:
                self.rejected.labels(reason).inc(n - seen)
                self._rejected_seen[reason] = n

    # --- exposition --------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition format: this process, or all workers in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def time_gc_pauses(metrics: Metrics) -> Callable[[], None]:
    """Time every garbage collection into `callgate_gc_pause_seconds`; returns the uninstaller.

    A full collection stops every call of the process at once, which the 100 ms lag timer rarely sees.
    """
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            metrics.gc_pause.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    return lambda: gc.callbacks.remove(on_gc) if on_gc in gc.callbacks else None


async def monitor_loop(metrics: Metrics, on_tick: Callable[[], None] | None = None) -> None:
    """Event-loop lag: sleep 100 ms and record how late the wake-up came. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        t0 = loop.time()
        await asyncio.sleep(LAG_INTERVAL_SECS)
        metrics.loop_lag.observe(max(0.0, loop.time() - t0 - LAG_INTERVAL_SECS))
        if on_tick is not None:
            try:
                on_tick()
            except Exception as e:  # a gauge refresh must never stop the lag monitor, nor fail unseen
                failures += 1
                if failures in (1, 10, 100) or failures % 1000 == 0:
                    logger.opt(exception=e).error(f"metrics refresh failed ({failures} times so far)")


def mark_process_dead(pid: int) -> None:
    """Supervisor: a worker has exited; its live gauges stop counting."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
