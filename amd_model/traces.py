"""AMD traces: one call's probability stream, speech events and verdicts, replayable offline.

Tuning is only honest if it replays exactly what production saw, in the order it saw it. A trace
therefore stores every 100 ms step's probabilities (as the exact floats the decision layer got), and
each speech event with `at_step`: how many steps the decision layer had processed when the event
reached it. `replay_trace` feeds these to the very `DecisionLayer` class production runs.

File format (JSON, one file per call, `<call_id>.json`):

    {"version": 2, "call_id": "CA123", "workflow": "power_dial", "source": "live" | "<wav path>",
     "label": "human" | null, "subtype": "human_business" | null,
     "truth": {"speech_onset_ms": 640, "first_utterance_end_ms": 1180, ...},   # when known
     "classes": ["human", "machine", "ivr", "carrier_intercept", ...],
     "step_ms": 100,
     "steps": [[100, p_human, p_machine, ...], [200, ...], ...],              # t_ms = end of step
     "speech": [{"event": "candidate", "t_ms": 620, "at_step": 7}, {"event": "start", "t_ms": 620, "at_step": 8},
                {"event": "end", ...}],                                 # candidate: voice not yet a start
     "verdicts": [{"label": "human", "confidence": 0.93, "t_ms": 1500, "detector": "human_fast",
                   "workflow": "power_dial"}]}
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from processors.amd_decision import STEP_MS, DecisionLayer, DetectorConfig, Verdict
from processors.json_file import read_json

TRACE_VERSION = 2  # 2: speech events include VAD candidates (an older reader would take them for ends)


@dataclass
class SpeechEvent:
    """A VAD transition as the decision layer saw it: applied before step index `at_step`."""

    event: str  # "start" | "end" | "candidate" | "candidate_dropped" (older traces have no candidates)
    t_ms: float
    at_step: int


@dataclass
class Trace:
    """One call's AMD trace (see the module docstring for the file format)."""

    call_id: str
    classes: list[str]
    steps: list[list[float]] = field(default_factory=list)  # [t_ms, p0, p1, ...]
    speech: list[SpeechEvent] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    workflow: str | None = None
    label: str | None = None
    subtype: str | None = None
    truth: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    _dicts: list[tuple[float, dict[str, float]]] | None = field(default=None, repr=False, compare=False)

    def step_dicts(self) -> list[tuple[float, dict[str, float]]]:
        """(t_ms, {class: p}) per step, built once (replay runs thousands of times in tuning)."""
        if self._dicts is None or len(self._dicts) != len(self.steps):
            self._dicts = [(row[0], dict(zip(self.classes, row[1:], strict=True))) for row in self.steps]
        return self._dicts

    def probs(self) -> np.ndarray:
        """(n_steps, n_classes) array."""
        return np.array([row[1:] for row in self.steps], dtype=np.float64).reshape(-1, len(self.classes))

    @property
    def speech_onset_ms(self) -> float | None:
        """Ground-truth onset when known, else the first VAD start in the trace."""
        v = self.truth.get("speech_onset_ms")
        if v is not None:
            return float(v)
        return next((e.t_ms for e in self.speech if e.event == "start"), None)

    @property
    def first_utterance_end_ms(self) -> float | None:
        """Ground-truth end of the first utterance when known, else the first VAD end."""
        v = self.truth.get("first_utterance_end_ms")
        if v is not None:
            return float(v)
        return next((e.t_ms for e in self.speech if e.event == "end"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TRACE_VERSION,
            "call_id": self.call_id,
            "workflow": self.workflow,
            "source": self.source,
            "label": self.label,
            "subtype": self.subtype,
            "truth": self.truth,
            "classes": list(self.classes),
            "step_ms": STEP_MS,
            "steps": self.steps,
            "speech": [{"event": e.event, "t_ms": e.t_ms, "at_step": e.at_step} for e in self.speech],
            "verdicts": self.verdicts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        if d.get("version", TRACE_VERSION) > TRACE_VERSION:
            raise ValueError(f"trace version {d['version']} is newer than this callgate ({TRACE_VERSION})")
        if d.get("step_ms", STEP_MS) != STEP_MS:
            raise ValueError(f"trace step_ms {d['step_ms']} != {STEP_MS}")
        return cls(
            call_id=str(d["call_id"]),
            classes=list(d["classes"]),
            steps=[list(map(float, row)) for row in d["steps"]],
            speech=[
                SpeechEvent(e["event"], float(e["t_ms"]), int(e["at_step"])) for e in d.get("speech", [])
            ],
            verdicts=list(d.get("verdicts", [])),
            workflow=d.get("workflow"),
            label=d.get("label"),
            subtype=d.get("subtype"),
            truth=dict(d.get("truth") or {}),
            source=d.get("source"),
        )


def save_trace(trace: Trace, path: str | Path) -> Path:
    """Write a trace; `path` may be a directory (then `<call_id>.json` inside it)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / f"{_safe_name(trace.call_id)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(trace.to_dict(), separators=(",", ":")))
    tmp.replace(path)
    return path


def load_trace(path: str | Path) -> Trace:
    return Trace.from_dict(read_json(path, "trace file"))


def load_traces(path: str | Path) -> list[Trace]:
    """Every `*.json` trace in a directory (sorted by name), or a single trace file."""
    path = Path(path)
    if path.is_file():
        return [load_trace(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"no traces at {path}")
    return [load_trace(p) for p in sorted(path.glob("*.json"))]


def _safe_name(call_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id) or "call"


def replay_trace(
    trace: Trace, detectors: Sequence[DetectorConfig], *, timeout_ms: float | None = None
) -> Verdict:
    """Run the production DecisionLayer over a trace, step by step, speech events in recorded order.

    A call that ended before any detector fired gives `unknown` at its last step (detector "none").
    """
    layer = DecisionLayer(detectors, timeout_ms=timeout_ms)
    events = trace.speech
    k = 0
    t_ms = 0.0
    for i, (t_ms, probs) in enumerate(trace.step_dicts()):
        while k < len(events) and events[k].at_step <= i:
            ev = events[k]
            apply_speech_event(layer, ev.event, ev.t_ms)
            k += 1
        verdict = layer.update(t_ms, probs)
        if verdict is not None:
            return verdict
    return Verdict("unknown", 0.0, t_ms, "none")


def apply_speech_event(layer: DecisionLayer, event: str, t_ms: float) -> None:
    """Hand one recorded VAD event to the decision layer (an unknown kind is an error, not an end)."""
    if event == "start":
        layer.on_speech_started(t_ms)
    elif event == "end":
        layer.on_speech_ended(t_ms)
    elif event == "candidate":
        layer.on_speech_candidate(t_ms, active=True)
    elif event == "candidate_dropped":
        layer.on_speech_candidate(t_ms, active=False)
    else:
        raise ValueError(f"unknown speech event {event!r} in trace")


def at_step_for(known_at_ms: float) -> int:
    """`at_step` for an event that became known at audio time known_at_ms (offline traces).

    Live, a VAD event from the 20 ms chunk ending at T reaches the decision layer after the step
    ending at T (AmdProcessor handles that chunk's audio first), so it applies from the next step.
    """
    return int(known_at_ms // STEP_MS)


class TraceRecorder:
    """Collects a live call's trace (AmdProcessor feeds steps/speech, AmdDecisionProcessor verdicts).

    `save()` is called at the end of the call; a verdict that arrives after that re-saves the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        call_id: str | None = None,
        workflow: str | None = None,
        label: str | None = None,
        classes: Iterable[str] = (),
    ) -> None:
        self.path = Path(path)
        self.trace = Trace(
            call_id=call_id or uuid.uuid4().hex[:16],
            classes=list(classes),
            workflow=workflow,
            label=label,
            source="live",
        )
        self.saved_to: Path | None = None

    @property
    def call_id(self) -> str:
        return self.trace.call_id

    @call_id.setter
    def call_id(self, value: str) -> None:
        self.trace.call_id = value

    def add_step(self, t_ms: float, probs: Sequence[float]) -> None:
        self.trace.steps.append([float(t_ms), *(float(p) for p in probs)])

    def add_speech(self, event: str, t_ms: float) -> None:
        self.trace.speech.append(SpeechEvent(event, float(t_ms), len(self.trace.steps)))

    def add_verdict(self, verdict: Verdict, *, workflow: str | None = None) -> None:
        self.trace.verdicts.append(verdict.to_dict() | {"workflow": workflow or self.trace.workflow})
        if self.saved_to is not None:
            self.save()

    def save(self) -> Path:
        self.saved_to = save_trace(self.trace, self.saved_to or self.path)
        return self.saved_to
