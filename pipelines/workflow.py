"""The base of every workflow processor: the call's audio clock, playing audio with a mark after it,
hanging up, Twilio's `stop`, and a safety timeout.

A workflow sits after the detectors and before the MarkTracker. It sees detection frames going
downstream and MarkResolvedFrames coming back upstream; subclasses override the `on_*` hooks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from pipelines.actions import CallGoneError, human_twiml
from pipelines.call import CallConfig
from processors.frames import (
    AmdVerdictFrame,
    BeepEndFrame,
    BeepFrame,
    CallActionFrame,
    MarkResolvedFrame,
    PlaybackMarkFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    TwilioStopFrame,
)

SAMPLES_PER_MS = SAMPLE_RATE // 1000


class Workflow(FrameProcessor):
    """Shared plumbing for workflows; `t_ms` is the call's audio time."""

    name: ClassVar[str] = "workflow"
    # Size of the audio frames the detectors forward to this workflow while no tone is sounding
    # (BeepDetector's chunk_ms): 100 ms cuts the per-frame work of every later processor by five and
    # costs nothing to a workflow that acts on AMD verdicts (100 ms steps) and beeps (forwarded at
    # once); 0 keeps Twilio's 20 ms packets (a conversation's turn-taking wants them).
    audio_chunk_ms: ClassVar[int] = 0
    # Size of the media messages the server sends (0: audio_chunk_ms, at least 40 ms). A workflow that
    # only plays recorded audio (a voicemail message, queued whole) sends it in coarse messages: each
    # one costs a JSON encode and a socket write, and Twilio buffers what it is sent ahead.
    audio_out_chunk_ms: ClassVar[int] = 0

    def __init__(self, call: CallConfig, **kwargs: Any) -> None:
        super().__init__(name=f"{self.name}-workflow", **kwargs)
        self.call = call
        self.settings = call.settings
        self._samples = 0
        self.ended = False
        self.outcome: str | None = None
        self._stop_at_ms: float | None = None  # Twilio sent `stop`; end when audio reaches this time

    @property
    def t_ms(self) -> float:
        return self._samples / SAMPLES_PER_MS

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, MarkResolvedFrame) and direction == FrameDirection.UPSTREAM:
            await self.on_mark(frame)
            return  # the downstream copy is the one that is logged
        await self.push_frame(frame, direction)
        if self.ended:
            return
        if isinstance(frame, InputAudioRawFrame):
            self._samples += len(frame.audio) // 2
            if self._stop_at_ms is not None:
                # Twilio has ended the call: audio still queued before its `stop` flows on to the
                # detectors (and traces), but the workflow no longer acts on a call that is gone.
                if self.t_ms >= self._stop_at_ms:
                    await self.remote_hangup()
                return
            await self.on_audio()
            if not self.ended and self.t_ms >= self.settings.call_timeout_secs * 1000:
                logger.warning(f"{self.call.call_sid}: safety timeout after {self.t_ms:.0f} ms")
                await self.hang_up("timeout")
        elif self._stop_at_ms is not None:
            return
        elif isinstance(frame, SpeechStartedFrame):
            await self.on_speech_start(frame)
        elif isinstance(frame, SpeechEndedFrame):
            await self.on_speech_end(frame)
        elif isinstance(frame, BeepFrame):
            await self.on_beep(frame)
        elif isinstance(frame, BeepEndFrame):
            await self.on_beep_end(frame)
        elif isinstance(frame, AmdVerdictFrame):
            await self.on_verdict(frame)
        elif isinstance(frame, TwilioStopFrame):
            if frame.audio_ms is None or self.t_ms >= frame.audio_ms:
                await self.remote_hangup()
            else:
                self._stop_at_ms = frame.audio_ms

    # --- hooks --------------------------------------------------------------------------------

    async def on_audio(self) -> None: ...
    async def on_speech_start(self, frame: SpeechStartedFrame) -> None: ...
    async def on_speech_end(self, frame: SpeechEndedFrame) -> None: ...
    async def on_beep(self, frame: BeepFrame) -> None: ...
    async def on_beep_end(self, frame: BeepEndFrame) -> None: ...
    async def on_verdict(self, frame: AmdVerdictFrame) -> None: ...
    async def on_mark(self, frame: MarkResolvedFrame) -> None: ...

    # --- actions ------------------------------------------------------------------------------

    async def action(self, action: str, **details: Any) -> None:
        """Log a workflow action as a call event."""
        logger.info(f"{self.call.call_sid or 'replay'}: {action} at {self.t_ms:.0f} ms {details or ''}")
        await self.push_frame(CallActionFrame(action=action, t_ms=self.t_ms, details=details))

    async def play(self, pcm: bytes, mark: str) -> None:
        """Queue audio for the caller with a mark behind it; on_mark() learns when it really played."""
        await self.push_frame(OutputAudioRawFrame(audio=pcm, sample_rate=SAMPLE_RATE, num_channels=1))
        await self.push_frame(PlaybackMarkFrame(mark_name=mark))

    async def hang_up(self, reason: str) -> None:
        """End the call: the EndFrame reaches the serializer, which hangs up through Twilio's REST API."""
        if self.ended:
            return
        self.ended = True
        self.outcome = self.outcome or reason
        await self.action("hangup", reason=reason)
        await self.push_frame(EndWorkerFrame(reason=reason))

    async def human_action(self) -> None:
        """The configured human action: bridge to CONNECT_NUMBER with <Dial>, else a polite goodbye."""
        kind, twiml = human_twiml(self.settings)
        await self.hand_off(kind, twiml)

    async def hand_off(self, action: str, twiml: str) -> None:
        """Give the call new TwiML; Twilio ends the stream itself, so there is no REST hang-up."""
        if self.ended:
            return
        self.ended = True
        try:
            ok = await self.call.control.redirect(twiml) if self.call.control else False
        except CallGoneError:  # the caller hung up while the hand-off was on its way: their hang-up ends it
            self.outcome = self.outcome or "remote_hangup"
            await self.action("remote_hangup", during=action)
            await self.push_frame(EndWorkerFrame(reason="remote_hangup"))
            return
        self.outcome = self.outcome or (action if ok else f"{action}_failed")
        await self.action(action, ok=ok)
        await self.push_frame(EndWorkerFrame(reason=action))

    async def remote_hangup(self) -> None:
        """Twilio sent `stop`: the caller or Twilio ended the call."""
        if self.ended:
            return
        self.ended = True
        self.outcome = self.outcome or "remote_hangup"
        await self.action("remote_hangup")
        await self.push_frame(EndWorkerFrame(reason="remote_hangup"))

