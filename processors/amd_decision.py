"""The AMD decision layer: parallel detectors over the model's 100 ms probability stream.

The model says what the audio sounds like every 100 ms; *when* to commit to a verdict is a separate,
per-workflow trade-off (precision vs recall vs latency). So the decision is a few transparent
detectors, each a handful of parameters, run side by side; the first that fires decides. Workflow
presets live in `pipelines/presets/amd.json` and are tuned offline by replaying recorded traces
through this very class (`amd_model.traces.replay_trace`, `callgate tune`).

Detector semantics (one step = 100 ms of audio, `t_ms` = end of the step in audio time):

- score: the summed probability of the watched `classes` (an empty list scores 1.0 at every step,
  which makes a plain timer: use it for the workflow's `unknown` timeout);
- window: `mode="mean"` (default) fires when the mean score over the last `window_ms / 100` steps
  is >= threshold; `mode="min"` needs *every* step of the window >= threshold. A detector never
  fires before its window is full;
- anchor: call start, or the caller's speech onset when `from_speech` (such a detector cannot fire
  before speech was heard); when the VAD has heard nothing, the first step where the model's `none`
  probability fell below 0.5 stands in for the onset;
- `min_delay_ms` <= t_ms - anchor < `max_wait_ms` (max_wait None = no limit);
- `requires_silence_ms`: the caller is not speaking, no voice the VAD has not confirmed yet is
  being heard (a `candidate`: a word resuming after a pause reaches the VAD's start ~100 ms late, and
  "said a word and went quiet" must not be decided inside that gap), and the caller has been silent
  for at least this long (since the last speech end, or since call start if nobody spoke yet);
- speech-structure conditions (all optional, from the VAD's events; they let a detector use what the
  model's last second does not see: a human says "hello?" and waits, a greeting keeps going):
  `min_talk_ms` = the caller is speaking now and has been for at least this long without a pause the
  VAD ends on; `min_speech_ms` = total speech heard since onset; `min_utterances` / `max_utterances`
  = speech starts so far (2 = resumed after a pause; max 1 = still in the first utterance); `max_pause_ms` = every pause between utterances so far was
  shorter than this (a caller who waits for an answer breaks it);
- first wins: detectors are checked in list order at each step, so list order breaks ties.

`AmdDecisionProcessor` adapts the plain `DecisionLayer` to Pipecat frames.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from processors.frames import (
    AmdProbabilityFrame,
    AmdVerdictFrame,
    SpeechCandidateFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    StopDetectorsFrame,
)
from processors.json_file import read_json

STEP_MS = 100
NO_EVIDENCE_CLASS = "none"  # the model's "nobody/nothing yet" class (amd.json no_evidence_class; presets name it too)
VERDICT_LABELS = ("human", "machine", "ivr", "carrier_intercept", "unknown")
DEFAULT_PRESETS_PATH = Path(__file__).resolve().parent.parent / "pipelines" / "presets" / "amd.json"


class DetectorConfig(BaseModel):
    """One detector: fires `label` when the watched classes' probability stays high enough."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: Literal["human", "machine", "ivr", "carrier_intercept", "unknown"]
    classes: list[str] = Field(default_factory=list, description="summed; empty = always 1.0 (a timer)")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    window_ms: int = Field(STEP_MS, ge=STEP_MS)
    mode: Literal["mean", "min"] = "mean"
    min_delay_ms: int = Field(0, ge=0)
    max_wait_ms: int | None = Field(None, gt=0)
    from_speech: bool = False
    requires_silence_ms: int | None = Field(None, ge=0)
    min_talk_ms: int | None = Field(None, ge=0, description="speaking now, for at least this long")
    min_speech_ms: int | None = Field(None, ge=0, description="total speech since onset")
    min_utterances: int | None = Field(None, ge=1, description="speech starts so far, at least")
    max_utterances: int | None = Field(None, ge=1, description="speech starts so far, at most")
    max_pause_ms: int | None = Field(None, gt=0, description="every pause so far shorter than this")

    @field_validator("classes", mode="before")
    @classmethod
    def _one_class(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check_window(self) -> DetectorConfig:
        if self.window_ms % STEP_MS:
            raise ValueError(f"detector {self.name!r}: window_ms must be a multiple of {STEP_MS}")
        return self

    @property
    def window_steps(self) -> int:
        return self.window_ms // STEP_MS


@dataclass(frozen=True)
class Verdict:
    """The decision: label, confidence (the detector's windowed score), audio time, detector name."""

    label: str
    confidence: float
    t_ms: float
    detector: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "t_ms": self.t_ms,
            "detector": self.detector,
        }


@dataclass
class SpeechState:
    """What the decision layer knows about the caller's speech (audio-time ms, from the VAD)."""

    onset_ms: float | None = None  # first speech start of the call
    evidence_ms: float | None = None  # first step where the model stopped saying "no evidence"
    first_end_ms: float | None = None  # end of the first utterance
    last_end_ms: float | None = None
    speaking: bool = False
    talk_start_ms: float | None = None  # start of the current utterance (while speaking)
    utterances: int = 0  # speech starts so far
    closed_speech_ms: float = 0.0  # summed length of the finished utterances
    longest_pause_ms: float = 0.0  # longest pause between two utterances so far
    candidate_ms: float | None = None  # voice heard while quiet, not (yet) confirmed as a start

    def started(self, t_ms: float) -> None:
        self.candidate_ms = None
        if self.onset_ms is None:
            self.onset_ms = t_ms
        if self.speaking:  # a repeated start (no end between): the utterance goes on
            return
        if self.last_end_ms is not None:
            self.longest_pause_ms = max(self.longest_pause_ms, t_ms - self.last_end_ms)
        self.speaking = True
        self.talk_start_ms = t_ms
        self.utterances += 1

    def candidate(self, t_ms: float, active: bool) -> None:
        """Voice began (active) or broke off short of a start; ignored while speaking."""
        self.candidate_ms = t_ms if active and not self.speaking else None

    def ended(self, t_ms: float) -> None:
        self.candidate_ms = None
        if self.onset_ms is None:  # an end without a start (VAD started before we did): treat as both
            self.onset_ms = t_ms
        if self.first_end_ms is None:
            self.first_end_ms = t_ms
        if self.speaking and self.talk_start_ms is not None:
            self.closed_speech_ms += max(0.0, t_ms - self.talk_start_ms)
        self.last_end_ms = t_ms
        self.speaking = False
        self.talk_start_ms = None

    @property
    def anchor_ms(self) -> float | None:
        """What `from_speech` detectors count from: the VAD's speech onset, or, when the VAD has heard
        nothing (a quiet or odd voice it scores low), the model's own evidence onset; otherwise a
        caller the model is sure about but the VAD missed could never get a verdict."""
        return self.onset_ms if self.onset_ms is not None else self.evidence_ms

    def silence_ms(self, t_ms: float) -> float:
        """How long the caller has been quiet at t_ms (0 while speaking or while voice is heard that
        the VAD has not confirmed yet; a candidate that breaks off does not restart the count)."""
        if self.speaking or self.candidate_ms is not None:
            return 0.0
        return t_ms - (self.last_end_ms if self.last_end_ms is not None else 0.0)

    def talk_ms(self, t_ms: float) -> float:
        """How long the current utterance has lasted at t_ms (0 when the caller is quiet)."""
        if not self.speaking or self.talk_start_ms is None:
            return 0.0
        return max(0.0, t_ms - self.talk_start_ms)

    def speech_ms(self, t_ms: float) -> float:
        """Total speech heard since onset, the current utterance included."""
        return self.closed_speech_ms + self.talk_ms(t_ms)


class _Detector:
    """Runtime state of one detector: a ring of its recent scores."""

    __slots__ = ("cfg", "_scores")

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self._scores: deque[float] = deque(maxlen=cfg.window_steps)

    def push(self, probs: Mapping[str, float]) -> None:
        classes = self.cfg.classes
        self._scores.append(sum(probs.get(c, 0.0) for c in classes) if classes else 1.0)

    def check(self, t_ms: float, speech: SpeechState) -> float | None:
        """The windowed score if the detector fires at t_ms, else None."""
        cfg = self.cfg
        if len(self._scores) < cfg.window_steps:
            return None
        if cfg.from_speech:
            anchor = speech.anchor_ms
            if anchor is None:
                return None
            since = t_ms - anchor
        else:
            since = t_ms
        if since < cfg.min_delay_ms or (cfg.max_wait_ms is not None and since >= cfg.max_wait_ms):
            return None
        if cfg.requires_silence_ms is not None and speech.silence_ms(t_ms) < cfg.requires_silence_ms:
            return None
        if not _structure_ok(cfg, t_ms, speech):
            return None
        if cfg.mode == "min":
            score = min(self._scores)
        else:
            score = sum(self._scores) / len(self._scores)
        # tolerance: float rounding (0.95 + 0.95 + 0.5) / 3 < 0.8; a score equal to the threshold fires
        return score if score >= cfg.threshold - 1e-9 else None


def _structure_ok(cfg: DetectorConfig, t_ms: float, speech: SpeechState) -> bool:
    """The detector's speech-structure conditions (none set: always true)."""
    if cfg.min_talk_ms is not None and (not speech.speaking or speech.talk_ms(t_ms) < cfg.min_talk_ms):
        return False
    if cfg.min_speech_ms is not None and speech.speech_ms(t_ms) < cfg.min_speech_ms:
        return False
    if cfg.min_utterances is not None and speech.utterances < cfg.min_utterances:
        return False
    if cfg.max_utterances is not None and speech.utterances > cfg.max_utterances:
        return False
    return cfg.max_pause_ms is None or speech.longest_pause_ms < cfg.max_pause_ms


class DecisionLayer:
    """Runs detectors in parallel on the probability stream; the first to fire gives the verdict.

    Plain and synchronous (no asyncio): the live processor and offline replay call the same methods
    in the same order, so a replayed trace reproduces the live verdict exactly.
    """

    def __init__(self, detectors: Sequence[DetectorConfig], *, timeout_ms: float | None = None) -> None:
        self.detectors = [_Detector(d) for d in detectors]
        self.timeout_ms = timeout_ms
        self.speech = SpeechState()
        self.verdict: Verdict | None = None

    def on_speech_started(self, t_ms: float) -> None:
        self.speech.started(t_ms)

    def on_speech_ended(self, t_ms: float) -> None:
        self.speech.ended(t_ms)

    def on_speech_candidate(self, t_ms: float, *, active: bool = True) -> None:
        self.speech.candidate(t_ms, active)

    def update(
        self, t_ms: float, probs: Mapping[str, float], speech: SpeechState | None = None
    ) -> Verdict | None:
        """Feed one 100 ms step; returns the verdict on the step that decides, else None.

        `speech` replaces the layer's own speech state when a caller tracks it elsewhere. After the
        verdict the layer is done: later calls return None.
        """
        if self.verdict is not None:
            return None
        if speech is not None:
            self.speech = speech
        if self.speech.evidence_ms is None and probs.get(NO_EVIDENCE_CLASS, 1.0) < 0.5:
            self.speech.evidence_ms = t_ms
        fired: Verdict | None = None
        for det in self.detectors:
            det.push(probs)
            if fired is None:
                score = det.check(t_ms, self.speech)
                if score is not None:  # a timer (no classes) has no evidence to be confident about
                    conf = float(min(1.0, score)) if det.cfg.classes else 0.0
                    fired = Verdict(det.cfg.label, conf, t_ms, det.cfg.name)
        if fired is None and self.timeout_ms is not None and t_ms >= self.timeout_ms:
            fired = Verdict("unknown", 0.0, t_ms, "timeout")
        self.verdict = fired
        return fired


# --- presets --------------------------------------------------------------------------------------


def parse_presets(data: Mapping[str, Any]) -> dict[str, list[DetectorConfig]]:
    """The `workflows` section of a presets document -> detector lists (keys starting with _ ignored)."""
    workflows = data.get("workflows", data)
    out: dict[str, list[DetectorConfig]] = {}
    for name, spec in workflows.items():
        if name.startswith("_"):
            continue
        dets = spec["detectors"] if isinstance(spec, Mapping) else spec
        out[name] = [DetectorConfig.model_validate(d) for d in dets]
    return out


def load_presets(path: str | Path | None = None) -> dict[str, list[DetectorConfig]]:
    """Workflow name -> detectors, from a presets JSON file (default: the shipped presets)."""
    return parse_presets(read_json(path if path is not None else DEFAULT_PRESETS_PATH, "AMD presets file"))


def preset_to_json(detectors: Iterable[DetectorConfig]) -> list[dict[str, Any]]:
    """Detectors -> the JSON list stored in the presets file (defaults left out for readability)."""
    return [
        {"name": d.name, "label": d.label, **d.model_dump(exclude_defaults=True, exclude={"name", "label"})}
        for d in detectors
    ]


def dump_presets(doc: Mapping[str, Any]) -> str:
    """A presets document as JSON text with one detector per line (diff-friendly, hand-editable)."""
    lines = ["{"]
    top = list(doc.items())
    for i, (key, value) in enumerate(top):
        comma = "," if i < len(top) - 1 else ""
        if key != "workflows":
            if isinstance(value, list) and value:
                lines.append(f"  {json.dumps(key)}: [")
                lines.extend(
                    f"    {json.dumps(v)}" + ("," if n < len(value) - 1 else "") for n, v in enumerate(value)
                )
                lines.append("  ]" + comma)
            else:
                lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
            continue
        lines.append('  "workflows": {')
        wfs = list(value.items())
        for j, (wf, spec) in enumerate(wfs):
            lines.append(f"    {json.dumps(wf)}: {{")
            for k, v in spec.items():
                if k != "detectors":
                    lines.append(f"      {json.dumps(k)}: {json.dumps(v)},")
            dets = spec.get("detectors", [])
            lines.append('      "detectors": [')
            for n, det in enumerate(dets):
                lines.append(f"        {json.dumps(det)}" + ("," if n < len(dets) - 1 else ""))
            lines.append("      ]")
            lines.append("    }" + ("," if j < len(wfs) - 1 else ""))
        lines.append("  }" + comma)
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- Pipecat adapter ------------------------------------------------------------------------------


class AmdDecisionProcessor(FrameProcessor):
    """Turns AmdProbabilityFrames (+ speech frames) into one AmdVerdictFrame, pushed downstream.

    Once it has the verdict it pushes a StopDetectorsFrame upstream (AMD's steps feed nobody any more);
    a workflow's StopDetectorsFrame coming up before the verdict is held until then.

    Forwards every frame. Place it after SpeechDetector and AmdProcessor so it sees speech events and
    probability steps in the order they were produced. Event `on_verdict(processor, verdict)` fires
    once. A `TraceRecorder` (from AmdProcessor.recorder) gets the verdict for the call's trace.
    """

    def __init__(
        self,
        detectors: Sequence[DetectorConfig] | None = None,
        *,
        workflow: str | None = None,
        presets_path: str | Path | None = None,
        timeout_ms: float | None = None,
        recorder: Any | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if detectors is None:
            presets = load_presets(presets_path)
            wf = workflow or "default"
            if wf not in presets:
                raise ValueError(f"no AMD preset for workflow {wf!r} (have: {', '.join(presets)})")
            detectors = presets[wf]
        self.workflow = workflow
        self.layer = DecisionLayer(detectors, timeout_ms=timeout_ms)
        self.recorder = recorder
        self._held_stop: StopDetectorsFrame | None = None  # a workflow's stop, held until the verdict
        self._register_event_handler("on_verdict")

    @property
    def verdict(self) -> Verdict | None:
        return self.layer.verdict

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StopDetectorsFrame) and direction == FrameDirection.UPSTREAM and self.verdict is None:
            self._held_stop = frame  # the verdict still needs the AMD steps and the speech events
            return
        await self.push_frame(frame, direction)
        if self.layer.verdict is not None or direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, SpeechStartedFrame):
            self.layer.on_speech_started(frame.t_ms)
        elif isinstance(frame, SpeechEndedFrame):
            self.layer.on_speech_ended(frame.t_ms)
        elif isinstance(frame, SpeechCandidateFrame):
            self.layer.on_speech_candidate(frame.t_ms, active=frame.active)
        elif isinstance(frame, AmdProbabilityFrame):
            verdict = self.layer.update(frame.t_ms, frame.probs)
            if verdict is not None:
                if self.recorder is not None:
                    self.recorder.add_verdict(verdict, workflow=self.workflow)
                await self.push_frame(
                    AmdVerdictFrame(
                        label=verdict.label,
                        confidence=verdict.confidence,
                        t_ms=verdict.t_ms,
                        detector=verdict.detector,
                    )
                )
                await self._call_event_handler("on_verdict", verdict)
                # AMD's steps feed nobody now (a workflow's held stop ends the other detectors too)
                stop, self._held_stop = self._held_stop or StopDetectorsFrame(amd_only=True), None
                await self.push_frame(stop, FrameDirection.UPSTREAM)
