"""Offline replay: the server's per-call pipeline driven by a file instead of a phone call.

`ReplaySource` stands where Twilio's input transport stands and feeds 100 ms frames as fast as the CPU
allows; `ReplayPlayback` stands where the output transport stands and plays what the workflow sends on
a simulated Twilio buffer in audio time, echoing marks when their audio would have finished (or at once
after a `clear`). The source waits for each frame to reach the end of the pipeline before sending the
next, so every decision happens at the same audio time as it would in a live call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    CancelWorkerFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE
from pipelines.actions import RecordingCallControl
from pipelines.call import CallConfig
from pipelines.factory import build_call_processors, call_worker
from pipelines.message import MessageCache
from processors.beep import BeepDetector
from processors.frames import TwilioMarkFrame, TwilioStopFrame
from simulator.playback import PlaybackBuffer

SAMPLES_PER_MS = SAMPLE_RATE // 1000
# Replay feeds 100 ms frames (five of Twilio's 20 ms packets): every analyzer times its events per
# window, so results match a live call while the pipeline moves 5x fewer frames.
REPLAY_FRAME = FRAME_SAMPLES * 5
REALTIME_WORKFLOWS = frozenset({"agent"})  # their services run on the wall clock: replay them paced


class ReplaySource(FrameProcessor):
    """Pushes the file (then silence, like a live line) frame by frame, in lock-step with the sink."""

    def __init__(
        self,
        pcm: np.ndarray,
        tail_ms: float,
        window: int = 1,
        speed: float | None = None,
        *,
        frame_samples: int = REPLAY_FRAME,
        held_samples: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._speed = speed  # None: as fast as the pipeline acks; x: paced at x times real time
        # Samples in flight before waiting for the sink: `window` frames, or the audio a processor may
        # hold back to forward as one chunk (BeepDetector's chunk_ms), whichever is more.
        self._in_flight = max(window * frame_samples, held_samples)
        self._frame = frame_samples
        self._samples_acked = 0
        self._pcm = pcm.astype(np.int16)
        self._tail_samples = int(tail_ms * SAMPLES_PER_MS)
        self._acked = asyncio.Event()
        self._inject: deque[Frame] = deque()
        self._task: asyncio.Task | None = None
        self._stopped = False
        self.samples_sent = 0

    def ack(self, samples: int) -> None:
        self._samples_acked += samples
        self._acked.set()

    def inject(self, frame: Frame) -> None:
        """Queue an inbound event (a mark echo) to go out before the next audio frame."""
        self._inject.append(frame)

    def stop(self) -> None:
        self._stopped = True
        self._acked.set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._task is None:
            self._task = self.create_task(self._feed())
        elif isinstance(frame, EndFrame | CancelFrame):
            self.stop()

    async def _feed(self) -> None:
        total = len(self._pcm) + self._tail_samples
        size = self._frame
        silence = np.zeros(size, dtype=np.int16)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not self._stopped and self.samples_sent < total:
            if self._speed:
                delay = t0 + self.samples_sent / SAMPLE_RATE / self._speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            while self._inject:
                await self.push_frame(self._inject.popleft())
            start = self.samples_sent
            chunk = self._pcm[start : start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, silence[: size - len(chunk)]])
            self.samples_sent += size
            await self.push_frame(InputAudioRawFrame(audio=chunk.tobytes(), sample_rate=SAMPLE_RATE, num_channels=1))
            while not self._stopped and self.samples_sent - self._samples_acked >= self._in_flight:
                self._acked.clear()
                await self._acked.wait()
        if not self._stopped:
            await self.push_frame(TwilioStopFrame(call_sid="replay"))


class ReplayPlayback(FrameProcessor):
    """Twilio's playback buffer (the simulator's model) in audio time; the last processor of a replay."""

    def __init__(self, source: ReplaySource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source = source
        self._now_ms = 0.0
        self.buffer: PlaybackBuffer[str] = PlaybackBuffer()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            samples = len(frame.audio) // 2
            self._now_ms += samples / SAMPLES_PER_MS
            while (name := self.buffer.pop_due(self._now_ms)) is not None:
                self._source.inject(TwilioMarkFrame(mark_name=name))
            self._source.ack(samples)
        elif isinstance(frame, OutputAudioRawFrame):
            self.buffer.add_audio(self._now_ms, len(frame.audio) / 2 / SAMPLES_PER_MS)
        elif isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            msg = frame.message
            if isinstance(msg, dict) and msg.get("event") == "mark":
                self.buffer.add_mark(self._now_ms, msg["mark"]["name"])
        elif isinstance(frame, InterruptionFrame):
            for name in self.buffer.clear(self._now_ms)[1]:  # `clear`: pending marks echo at once
                self._source.inject(TwilioMarkFrame(mark_name=name))
        elif isinstance(frame, EndWorkerFrame | CancelWorkerFrame | EndFrame | CancelFrame):
            self._source.stop()  # the workflow hung up: the line goes quiet, as Twilio's would
        await self.push_frame(frame, direction)


@dataclass
class ReplayResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


async def replay_pcm(
    pcm: np.ndarray,
    call: CallConfig,
    messages: MessageCache,
    *,
    tail_ms: float = 30_000,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    speed: float | None = None,
    frame_samples: int = REPLAY_FRAME,
) -> ReplayResult:
    """Run one call's pipeline over 8 kHz int16 audio; returns its events and a summary.

    `speed`: pace the audio at that many times real time (None: as fast as the CPU allows). The agent
    workflow needs pacing: its STT, LLM and TTS answer on the wall clock, not on the audio's.
    `frame_samples=FRAME_SAMPLES` with speed=1.0 feeds Twilio's 20 ms packets as a live call does.
    """
    if call.control is None:
        call.control = RecordingCallControl()  # hand-offs succeed on paper; nothing to call
    if speed is None and call.workflow in REALTIME_WORKFLOWS:
        speed = 1.0
    parts = build_call_processors(call, messages, on_event=on_event)
    # The playback model's clock moves with the audio reaching it: audio keeps its chunks once detection
    # stops (a live call's would grow to 1 s), so replayed mark and hang-up times stay on the 100 ms grid.
    beep = next((p for p in parts.processors if isinstance(p, BeepDetector)), None)
    if beep is not None:
        beep.stopped_chunk_ms = beep.chunk_ms
    held = parts.workflow.audio_chunk_ms * SAMPLES_PER_MS
    source = ReplaySource(pcm, tail_ms=tail_ms, speed=speed, frame_samples=frame_samples, held_samples=held)
    playback = ReplayPlayback(source)
    worker = call_worker([source, *parts.processors, playback])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    summary = {
        "event": "summary",
        "t_ms": round(source.samples_sent / SAMPLES_PER_MS),
        "workflow": call.workflow,
        "outcome": parts.workflow.outcome,
        "audio_ms": round(len(pcm) / SAMPLES_PER_MS),
        "message_played_ms": round(playback.buffer.queued_ms),
        "marks_played": parts.marks.ledger.played,
        "marks_cancelled": parts.marks.ledger.cancelled,
    }
    transcript = getattr(parts.workflow, "transcript", None)
    if transcript is not None:  # agent: the conversation and its latency report
        summary["transcript"] = transcript
        summary["latency"] = getattr(parts.workflow, "latency", [])
    if on_event:
        on_event(summary)
    return ReplayResult(events=[*parts.events.events, summary], summary=summary)
