"""The server's per-process state, shared by the routes (server.py) and the Media Stream handler.

It lives here, not in server.py, so callgate/edge/stream.py can use it without importing the app.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from callgate.drain import Drain
from callgate.edge.call_options import OptionError, check_asset_name
from callgate.edge.rejections import Rejections
from callgate.metrics import Metrics
from callgate.settings import Settings
from callgate.store import CallStore
from pipelines.message import MessageCache
from pipelines.twilio_amd import MAX_AMD_PARAM_CHARS, TWILIO_AMD_PARAMS
from pipelines.workflow_names import UnknownWorkflowError, check_workflow
from twiml.signatures import SignatureChecker
from twiml.tokens import StreamTokens


@dataclass
class CallRecord:
    """What the server knows about one call, live or recently finished."""

    call_sid: str
    workflow: str
    started_at: float = field(default_factory=time.time)
    status: str = "in-progress"
    outcome: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    max_events: int = 2000
    events_dropped: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)  # agent: who said what, what was heard
    latency: list[dict[str, Any]] = field(default_factory=list)  # agent: per-turn voice-to-voice parts

    def add_event(self, event: dict[str, Any]) -> None:
        """Keep at most max_events per call: a call that emits without end cannot grow memory."""
        if len(self.events) < self.max_events:
            self.events.append(event)
        else:
            self.events_dropped += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "workflow": self.workflow,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "events": self.events,
            "counters": self.counters,
            "transcript": self.transcript,
            "latency": self.latency,
        }


@dataclass
class ServerState:
    settings: Settings
    signatures: SignatureChecker
    tokens: StreamTokens
    messages: MessageCache
    active: dict[str, CallRecord] = field(default_factory=dict)
    finished: TTLCache = field(default_factory=lambda: TTLCache(maxsize=10_000, ttl=3600))
    stream_counters: dict[str, int] = field(default_factory=dict)
    reject: Rejections = field(default_factory=Rejections)

    @property
    def rejected(self) -> dict[str, int]:
        """Refusals by reason (state.reject(reason, why) logs at a rate-limited level, then counts)."""
        return self.reject.counts

    def check_call_options(self, options: dict[str, str]) -> dict[str, str]:
        """workflow, message, agent and amd as the call will use them; OptionError if one cannot be used."""
        workflow = options.get("workflow") or self.settings.default_workflow
        try:
            check_workflow(workflow)
        except UnknownWorkflowError as e:
            raise OptionError(str(e)) from e
        chosen = {"workflow": workflow}
        if options.get("message"):
            chosen["message"] = check_asset_name("message", options["message"], self.settings.messages_dir)
        if options.get("agent"):
            chosen["agent"] = check_asset_name(
                "agent", options["agent"], self.settings.agents_dir, any_suffix=True
            )
        if options.get("amd"):
            if options["amd"] not in ("on", "off"):
                raise OptionError("amd must be 'on' or 'off'")
            chosen["amd"] = options["amd"]
        # Twilio's AMD parameters ride along as given; the workflow validates and reports them. One that is
        # too long is refused, never cut (a cut callback URL would post AnsweredBy somewhere else).
        for k in TWILIO_AMD_PARAMS:
            if options.get(k):
                if len(value := str(options[k])) > MAX_AMD_PARAM_CHARS:
                    raise OptionError(f"{k} is longer than {MAX_AMD_PARAM_CHARS} characters")
                chosen[k] = value
        return chosen
    store: CallStore | None = None
    metrics: Metrics = field(default_factory=Metrics)
    drain: Drain = field(default_factory=lambda: Drain(300.0))

    def refresh_gauges(self) -> None:
        """Metrics that mirror state owned elsewhere (the record writer, the drain, the rejections)."""
        if self.store is not None:
            self.metrics.track_store(self.store.stats, self.store.depth)
        self.metrics.track_rejections(self.rejected)
        self.metrics.draining.set(1 if self.drain.draining else 0)

