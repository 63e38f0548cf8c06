"""Playback marks: any processor can put a named mark after its audio and learn when it really played.

Twilio echoes a mark when the audio sent before it has finished playing, but it also echoes every
pending mark at once after a `clear`, and that echo looks exactly like a played one. The tracker
therefore resolves marks that were pending when the pipeline interrupted (sent `clear`) as cancelled,
and treats echoes that arrive after a `clear` and before new audio as cancelled too.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import MarkResolvedFrame, PlaybackMarkFrame, TwilioMarkFrame

SAMPLES_PER_MS = 8


@dataclass
class MarkLedger:
    """The bookkeeping, free of frames and asyncio: which marks are out, and what an echo means."""

    pending: dict[str, int]  # name -> times sent and not yet resolved
    cleared_since_audio: bool = False
    played: int = 0
    cancelled: int = 0
    unexpected: int = 0

    @classmethod
    def new(cls) -> MarkLedger:
        return cls(pending={})

    def sent(self, name: str) -> None:
        self.pending[name] = self.pending.get(name, 0) + 1

    def audio_sent(self) -> None:
        self.cleared_since_audio = False

    def cleared(self) -> list[str]:
        """A `clear` went out: every pending mark is cancelled now; their echoes will be ignored."""
        self.cleared_since_audio = True
        names = [n for n, k in self.pending.items() for _ in range(k)]
        self.pending.clear()
        self.cancelled += len(names)
        return names

    def echoed(self, name: str) -> bool | None:
        """An echo came back: True = played, False = cancelled, None = not ours (already resolved)."""
        if self.pending.get(name, 0) <= 0:
            self.unexpected += 1
            return None
        self.pending[name] -= 1
        if not self.pending[name]:
            del self.pending[name]
        if self.cleared_since_audio:
            self.cancelled += 1
            return False
        self.played += 1
        return True


class MarkTracker(FrameProcessor):
    """Sits just before the output transport; turns PlaybackMarkFrames into Twilio marks and echoes
    into MarkResolvedFrames (pushed both ways: upstream to whoever asked, downstream for the event log).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ledger = MarkLedger.new()
        self._stream_sid = ""
        self._audio_samples = 0  # inbound audio time, for event timestamps

    def set_stream_sid(self, stream_sid: str) -> None:
        self._stream_sid = stream_sid

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._audio_samples += len(frame.audio) // 2
        elif isinstance(frame, PlaybackMarkFrame):
            self.ledger.sent(frame.mark_name)
            msg = {"event": "mark", "streamSid": self._stream_sid, "mark": {"name": frame.mark_name}}
            await self.push_frame(OutputTransportMessageFrame(message=msg), direction)
            return
        elif isinstance(frame, OutputAudioRawFrame):
            self.ledger.audio_sent()
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            for name in self.ledger.cleared():
                await self._resolve(name, played=False)
        elif isinstance(frame, TwilioMarkFrame):
            played = self.ledger.echoed(frame.mark_name)
            if played is None:
                logger.debug(f"mark echo {frame.mark_name!r} already resolved or unknown")
            else:
                await self._resolve(frame.mark_name, played=played)
            return
        await self.push_frame(frame, direction)

    async def _resolve(self, name: str, *, played: bool) -> None:
        t_ms = self._audio_samples / SAMPLES_PER_MS
        for direction in (FrameDirection.UPSTREAM, FrameDirection.DOWNSTREAM):
            await self.push_frame(MarkResolvedFrame(mark_name=name, played=played, t_ms=t_ms), direction)
