"""A vendor that fails mid-call never kills the call: count it, log it, fall back, and if that fails, say goodbye.

Each vendor service is wrapped in Pipecat's own ServiceSwitcher next to its offline stand-by:
STT Deepgram -> pocketsphinx, TTS Cartesia -> the offline voice, LLM OpenAI -> a farewell "LLM" (the
local chat server answering with `vendor_failure_message` and an `end_call` tool call, so the call ends
through the agent's own goodbye path). What moves a call to the stand-by:

- an error that leaves the vendor unusable (Pipecat's verdict: a 4xx at the handshake, too many quick
  reconnects), at once;
- `<role>_errors_before_fallback` errors of any kind in this call (a dropped socket that Pipecat
  reconnects by itself counts one);
- silence where an answer is due, counted as a timeout error: no transcript `stt_timeout_secs` after the
  caller stopped talking; no audio for `tts_timeout_secs` while the text sent for synthesis is still
  owed audio (less than MIN_SECS_PER_WORD per word received).

After an LLM fallback the failed turn is run again on the stand-by, so the caller is answered (politely
told goodbye) instead of left in silence; after a TTS fallback the text that had not been voiced yet is
spoken again by the stand-by voice. Everything is counted in `VendorHealth.counters`, which the call's
record can expose, and logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import CallEvent

ROLES = ("stt", "llm", "tts")
MIN_SECS_PER_WORD = 0.15  # no voice speaks a word faster: less audio than this means audio is still owed


@dataclass
class VendorFaultFrame(SystemFrame, CallEvent):
    """A public call event: a vendor erred, timed out, was replaced, or work was redone on its stand-by."""

    role: str = ""
    kind: str = ""
    detail: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    t_ms: float = 0.0
    event_name = "vendor_fault"

    def to_event(self) -> dict[str, Any]:
        return {"event": "vendor_fault", "t_ms": round(self.t_ms), "role": self.role, "kind": self.kind,
                "detail": self.detail, "counters": dict(self.counters)}


@dataclass
class VendorHealth:
    """Per-call counters and a short log of vendor trouble (JSON-ready via `as_dict`)."""

    counters: dict[str, int] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    gave_up: bool = False
    audio_ms: float | None = None  # the call's input audio clock, kept by the STT switcher when there is one
    _t0: float = field(default_factory=time.monotonic)

    def t_ms(self) -> float:
        """Audio time of the call when known (what other events use), else ms since the services were built."""
        return self.audio_ms if self.audio_ms is not None else (time.monotonic() - self._t0) * 1000

    def count(self, role: str, kind: str, detail: str = "") -> int:
        key = f"{role}_{kind}"
        self.counters[key] = self.counters.get(key, 0) + 1
        if len(self.events) < 200:
            self.events.append(
                {"t_ms": round((time.monotonic() - self._t0) * 1000), "role": role, "kind": kind, "detail": detail[:200]}
            )
        return self.counters[key]

    def as_dict(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "active": dict(self.active), "events": list(self.events),
                "gave_up": self.gave_up}


class CountingFailover(ServiceSwitcherStrategyFailover):
    """Failover that also moves on after `threshold` errors of a usable service, and counts everything."""

    role = "?"
    threshold = 1
    health: VendorHealth | None = None
    switcher: Any = None

    def configure(self, role: str, threshold: int, health: VendorHealth, switcher: Any) -> None:
        self.role, self.threshold, self.health, self.switcher = role, max(1, threshold), health, switcher
        health.active[role] = self.active_service.name
        self._errors_here = 0

    async def handle_error(self, error: ErrorFrame) -> FrameProcessor | None:
        health = self.health or VendorHealth()
        failed = error.processor or self.active_service
        await self.switcher.count(self.role, "errors", f"{failed.name}: {error.error}")
        self._errors_here = getattr(self, "_errors_here", 0) + 1
        logger.warning(f"{self.role}: {failed.name} error {self._errors_here}/{self.threshold}: {error.error}")
        others = [s for s in self.usable_services if s is not failed]
        # The last usable service is never written off by our count (only by Pipecat's own verdict):
        # a slow stand-by is better than none.
        if failed.is_usable and others and self._errors_here >= self.threshold:
            await failed.set_usable(False)
        switched = await super().handle_error(error)
        if switched is not None:
            self._errors_here = 0
            self.switcher.note_fallback()
            await self.switcher.count(self.role, "fallbacks", f"{failed.name} -> {switched.name}")
            health.active[self.role] = switched.name
            logger.warning(f"{self.role}: fell back from {failed.name} to {switched.name}")
        elif not failed.is_usable:
            health.gave_up = True
            await self.switcher.count(self.role, "unrecoverable", failed.name)
        return switched


class _Watchdog:
    """The timing half of a switcher: silence where an answer is due becomes a timeout error."""

    def __init__(self, role: str, timeout_secs: float) -> None:
        self.role = role
        self.timeout_secs = timeout_secs
        self.speech_start: float | None = None
        self.heard_since_start = False
        self.deadline: float | None = None
        self.tts_deadline: float | None = None
        self.tts_words = 0
        self.tts_audio_secs = 0.0
        self.tts_audio_in_context = False
        # TTS: what was sent for synthesis and not voiced yet, so a stand-by can say it again. Streamed LLM
        # text is kept as text; a TTSSpeakFrame is kept as a group with the data frames that came just
        # before it (a workflow's clause bookkeeping), matched to the TTS context it opened.
        self.pending_text: list[LLMTextFrame] = []
        self.loose: list[Frame] = []
        self.groups: deque[list[Frame]] = deque()
        self.assigned: dict[str, list[Frame]] = {}
        self.voiced: set[str] = set()
        # STT: the caller's current utterance (with a little pre-roll), kept until it is transcribed, so
        # a stand-by that takes over can hear it again instead of the caller having to repeat it.
        self.preroll: deque[InputAudioRawFrame] = deque(maxlen=25)
        self.utterance: list[InputAudioRawFrame] = []
        self.recording = False
        self.transcribed = True

    def on_in(self, frame: Frame) -> None:
        now = time.monotonic()
        if self.role == "stt":
            if isinstance(frame, InputAudioRawFrame):
                if self.recording and len(self.utterance) < 1500:  # 30 s of 20 ms frames at most
                    self.utterance.append(frame)
                elif not self.recording:
                    self.preroll.append(frame)
            elif isinstance(frame, VADUserStartedSpeakingFrame):
                self.speech_start, self.heard_since_start = now, False
                self.recording, self.transcribed = True, False
                self.utterance = list(self.preroll)
            elif isinstance(frame, VADUserStoppedSpeakingFrame) and self.speech_start is not None:
                self.recording = False
                if not self.heard_since_start and now - self.speech_start >= 0.3:
                    self.deadline = now + self.timeout_secs
        elif self.role == "tts":
            if isinstance(frame, LLMTextFrame) and frame.text.strip():
                self.pending_text.append(frame)
            elif isinstance(frame, TTSSpeakFrame) and frame.text.strip():
                self.groups.append([*self.loose, frame])
                self.loose = []
            elif isinstance(frame, InterruptionFrame):
                self.tts_deadline, self.tts_words, self.tts_audio_secs, self.pending_text = None, 0, 0.0, []
                self.loose, self.assigned, self.voiced = [], {}, set()
                self.groups.clear()
            elif isinstance(frame, DataFrame) and not isinstance(frame, _NOT_REPLAYED):
                self.loose = [*self.loose[-19:], frame]

    def on_out(self, frame: Frame) -> None:
        now = time.monotonic()
        if self.role == "stt" and isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            self.heard_since_start, self.deadline = True, None
            if isinstance(frame, TranscriptionFrame) and not self.recording:
                self.transcribed, self.utterance = True, []
        elif self.role == "tts":
            if isinstance(frame, AggregatedTextFrame) and frame.text.strip():
                # The TTS service announces each piece of text as it sends it for synthesis (behind the
                # audio before it): from now on audio is owed.
                self.tts_words += len(frame.text.split())
                if self.tts_deadline is None:
                    self.tts_deadline = now + self.timeout_secs
            elif isinstance(frame, TTSStartedFrame) and frame.context_id and self.groups:
                self.assigned[frame.context_id] = self.groups.popleft()
            elif isinstance(frame, TTSAudioRawFrame):
                self.tts_audio_secs += len(frame.audio) / 2 / max(frame.sample_rate, 1)
                self.tts_audio_in_context = True
                if frame.context_id:
                    self.voiced.add(frame.context_id)
                owed = self.tts_audio_secs < self.tts_words * MIN_SECS_PER_WORD
                self.tts_deadline = now + self.timeout_secs if owed else None
            elif isinstance(frame, TTSStoppedFrame):
                self.tts_deadline, self.tts_words, self.tts_audio_secs = None, 0, 0.0
                if self.tts_audio_in_context:  # voiced: nothing to say again (an error stop keeps it)
                    self.pending_text = []
                self.tts_audio_in_context = False
                if frame.context_id in self.voiced:
                    self.assigned.pop(frame.context_id, None)
                    self.voiced.discard(frame.context_id)
                    if not self.assigned and not self.groups:
                        self.loose = []

    def take_unvoiced(self) -> tuple[list[str], list[Frame]]:
        """(contexts the failed TTS left open, the frames to send the stand-by), and forget them."""
        open_ctx = [cid for cid in self.assigned if cid not in self.voiced]
        frames = [f for g in self.assigned.values() for f in g] + [f for g in self.groups for f in g] + self.loose
        llm_text = " ".join(f.text.strip() for f in self.pending_text)
        if llm_text:
            frames.insert(0, TTSSpeakFrame(llm_text))
        self.pending_text, self.loose, self.assigned, self.voiced = [], [], {}, set()
        self.groups.clear()
        return open_ctx, frames

    def expired(self) -> str | None:
        now = time.monotonic()
        if self.role == "stt" and self.deadline is not None and now >= self.deadline:
            self.deadline = None
            return f"no transcript {self.timeout_secs:.1f} s after the caller stopped talking"
        if self.role == "tts" and self.tts_deadline is not None and now >= self.tts_deadline:
            self.tts_deadline = None
            return f"no audio for {self.timeout_secs:.1f} s while audio was owed for sent text"
        return None


# Frames that pass the TTS but are not part of what it was asked to say (never sent twice).
_NOT_REPLAYED = (TextFrame, LLMContextFrame, OutputAudioRawFrame, OutputTransportMessageFrame)


def _copy(frame: Frame) -> Frame:
    """The same frame with a new id (a frame is never sent twice)."""
    try:
        return dataclasses.replace(frame)
    except (TypeError, ValueError):
        return frame


class _FailoverMixin:
    """What the STT/TTS and LLM switchers share: configuration, the watchdog task, re-running lost work."""

    role: str
    health: VendorHealth

    def _setup_failover(self, role: str, health: VendorHealth, threshold: int, timeout_secs: float) -> None:
        self.role, self.health = role, health
        self._watchdog = _Watchdog(role, timeout_secs)
        self._watch_task: asyncio.Task | None = None
        self._last_context: LLMContextFrame | None = None
        self._replayed: set[int] = set()
        self.strategy.configure(role, threshold, health, self)  # type: ignore[attr-defined]
        self.strategy.add_event_handler("on_service_switched", self._on_switched)  # type: ignore[attr-defined]

    def note_fallback(self) -> None:
        """The strategy just switched (inline, before the failed service's next frame)."""

    async def count(self, role: str, kind: str, detail: str = "") -> None:
        """Count, log, and tell the call (a `vendor_fault` event downstream, for its record and --json)."""
        self.health.count(role, kind, detail)
        frame = VendorFaultFrame(role=role, kind=kind, detail=detail[:200], counters=dict(self.health.counters),
                                 t_ms=self.health.t_ms())
        await self.push_frame(frame)  # type: ignore[attr-defined]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            reason = self._watchdog.expired()
            active = self.strategy.active_service  # type: ignore[attr-defined]
            # Timeouts judge the vendor; the offline stand-by is slower by nature and is never timed.
            if reason and active is self.strategy.services[0]:  # type: ignore[attr-defined]
                await self.count(self.role, "timeouts", f"{active.name}: {reason}")
                await self.strategy.handle_error(ErrorFrame(error=f"timeout: {reason}", processor=active))  # type: ignore[attr-defined]

    async def _on_switched(self, strategy: Any, service: FrameProcessor) -> None:
        w = self._watchdog
        if self.role == "stt" and not w.transcribed and w.utterance:
            # Replay the untranscribed utterance into the stand-by only; its echoes are dropped on the way out.
            frames: list[Frame] = [VADUserStartedSpeakingFrame(), *w.utterance]
            if not w.recording:
                frames.append(VADUserStoppedSpeakingFrame())
            await self.count("stt", "replayed_utterances", f"{len(w.utterance) * 20} ms")
            for f in frames:
                self._replayed.add(f.id)
                await self.queue_frame(f)  # type: ignore[attr-defined]
        elif self.role == "llm" and self._last_context is not None:
            await self.count("llm", "rerun_turns", service.name)
            await self.queue_frame(self._last_context)  # type: ignore[attr-defined]
        elif self.role == "tts":
            # Close what the dead vendor left open (so a playout that waits for each context moves on),
            # then say again, on the stand-by, what was not voiced: fresh copies of the same frames.
            open_ctx, frames = self._watchdog.take_unvoiced()
            for cid in open_ctx:
                await self.push_frame(TTSStoppedFrame(context_id=cid))  # type: ignore[attr-defined]
            again = [_copy(f) for f in frames]
            text = " ".join(f.text for f in again if isinstance(f, TTSSpeakFrame))
            if text:
                await self.count("tts", "respoken", text[:80])
            for f in again:
                await self.queue_frame(f)  # type: ignore[attr-defined]

    async def _failover_in(self, frame: Frame) -> None:
        if frame.id in self._replayed:
            return
        if isinstance(frame, StartFrame) and self._watch_task is None:
            self._watch_task = self.create_task(self._watch(), f"{self.role}-watchdog")  # type: ignore[attr-defined]
        elif isinstance(frame, (EndFrame, CancelFrame)) and self._watch_task is not None:
            await self.cancel_task(self._watch_task)  # type: ignore[attr-defined]
            self._watch_task = None
        elif isinstance(frame, LLMContextFrame):
            self._last_context = frame
        elif isinstance(frame, InputAudioRawFrame) and self.role == "stt":
            ms = len(frame.audio) / 2 / max(frame.sample_rate, 1) * 1000
            self.health.audio_ms = (self.health.audio_ms or 0.0) + ms
        self._watchdog.on_in(frame)


class FailoverSwitcher(_FailoverMixin, ServiceSwitcher[CountingFailover]):
    """ServiceSwitcher([vendor, offline]) for STT or TTS with counting, timeouts and re-speaking."""

    def __init__(
        self, services: list[FrameProcessor], *, role: str, health: VendorHealth, threshold: int, timeout_secs: float
    ) -> None:
        super().__init__(services, CountingFailover)
        self._setup_failover(role, health, threshold, timeout_secs)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await self._failover_in(frame)
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if frame.id in self._replayed:  # a replayed input frame: the rest of the pipeline has seen it
            self._replayed.discard(frame.id)
            return
        self._watchdog.on_out(frame)
        await super().push_frame(frame, direction)


class FailoverLLMSwitcher(_FailoverMixin, LLMSwitcher[CountingFailover]):
    """LLMSwitcher([vendor, farewell]): a failed turn is run again on the farewell LLM.

    Downstream sees one response per turn: the failed attempt's LLMFullResponseStart/End pair is held
    back (when it said nothing) or stitched to the stand-by's (when it had already said some words), so
    a workflow that counts one response per turn speaks the stand-by's words in that turn.
    """

    def __init__(self, llms: list[Any], *, health: VendorHealth, threshold: int) -> None:
        super().__init__(llms, CountingFailover)
        self._setup_failover("llm", health, threshold, timeout_secs=0.0)
        self._held_start: LLMFullResponseStartFrame | None = None
        self._open = False  # a Start went downstream and its End has not
        self._failing = False  # a fallback happened while this response was in flight
        self._swallow_start = False  # the rerun continues a response whose Start already went out

    def note_fallback(self) -> None:
        # Called inline by the strategy (the switch event handler may run later, after the failed End).
        if self._held_start is not None or self._open:
            self._failing = True

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if direction != FrameDirection.DOWNSTREAM or isinstance(frame, SystemFrame):
            await super().push_frame(frame, direction)
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            if self._swallow_start:
                self._swallow_start = False
            else:
                self._held_start = frame
            return
        if isinstance(frame, LLMFullResponseEndFrame):
            failing, self._failing = self._failing, False
            if failing:
                if self._open:  # words went out: the stand-by's words continue this same response
                    self._swallow_start = True
                self._held_start = None
                return
            if self._held_start is not None:
                await super().push_frame(self._held_start, direction)
                self._held_start = None
            self._open = False
            await super().push_frame(frame, direction)
            return
        if self._held_start is not None:
            await super().push_frame(self._held_start, direction)
            self._held_start, self._open = None, True
        await super().push_frame(frame, direction)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await self._failover_in(frame)
        await super().process_frame(frame, direction)
