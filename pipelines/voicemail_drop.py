"""voicemail_drop: leave a pre-recorded message right after the beep, then hang up.

AMD decides first: a human gets the configured human action (bridge or polite goodbye) and never hears
the message; an IVR or carrier intercept is hung up on. On a machine (or an AMD timeout) the message
starts when the beep ends, or, when no beep comes, once the greeting is over (a silence of
`greeting_end_silence_secs` after speech). A beep is itself proof of a machine. The call is hung up
only when the mark behind the message is echoed as played, so the whole message is on the recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from loguru import logger
from pipecat.processors.frame_processor import FrameDirection

from callgate.audio import AudioFormatError
from pipelines.call import CallConfig
from pipelines.message import Message, MessageCache
from pipelines.twilio_amd import greeting_end_silence_ms
from pipelines.workflow import Workflow
from processors.frames import (
    AmdVerdictFrame,
    BeepEndFrame,
    BeepFrame,
    MarkResolvedFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    StopDetectorsFrame,
)

MESSAGE_MARK = "voicemail_message_end"


class Phase(Enum):
    LISTENING = "listening"  # the greeting is playing
    IN_BEEP = "in_beep"  # a beep is sounding: wait for its end
    PLAYING = "playing"  # our message is playing
    DONE = "done"


@dataclass
class VoicemailDropPolicy:
    """When to start the message: plain logic on audio-time events, no frames or asyncio."""

    greeting_end_silence_ms: float = 2500.0
    require_verdict: bool = True  # the silence fallback waits for AMD to say machine (or time out)
    amd_label: str | None = None
    phase: Phase = Phase.LISTENING
    heard_speech: bool = False
    speaking: bool = False
    silence_since_ms: float | None = None
    trigger: str | None = None

    def speech_start(self, t_ms: float) -> None:
        self.heard_speech, self.speaking, self.silence_since_ms = True, True, None

    def speech_end(self, t_ms: float) -> None:
        self.speaking, self.silence_since_ms = False, t_ms

    def verdict(self, label: str) -> None:
        self.amd_label = label

    def beep(self) -> None:
        if self.phase is Phase.LISTENING:
            self.phase = Phase.IN_BEEP

    def beep_end(self) -> bool:
        """True: start the message now."""
        if self.phase in (Phase.LISTENING, Phase.IN_BEEP) and self.amd_label != "human":
            self.phase, self.trigger = Phase.PLAYING, "beep"
            return True
        return False

    def tick(self, now_ms: float) -> bool:
        """True: the greeting is over (speech, then enough silence) and no beep is sounding."""
        if self.phase is not Phase.LISTENING or not self.heard_speech or self.speaking:
            return False
        if self.require_verdict and self.amd_label not in ("machine", "unknown"):
            return False
        if self.silence_since_ms is not None and now_ms - self.silence_since_ms >= self.greeting_end_silence_ms:
            self.phase, self.trigger = Phase.PLAYING, "silence"
            return True
        return False


def greeting_end_silence_for(call: CallConfig) -> float:
    """This call's greeting-end silence (ms): Twilio's MachineDetectionSpeechEndThreshold when the call
    gave one (the AMD drop-in), else GREETING_END_SILENCE_SECS."""
    return greeting_end_silence_ms(call.params) or call.settings.greeting_end_silence_secs * 1000


class VoicemailLeaver:
    """The voicemail_drop logic for any workflow: follow the greeting, play the message after the beep
    (or the greeting's end), hang up once its mark is echoed as played. `agent` uses it for machines."""

    def __init__(self, workflow: Workflow, message: Message, greeting_end_silence_ms: float) -> None:
        self.workflow = workflow
        self.message = message
        self.policy = VoicemailDropPolicy(greeting_end_silence_ms=greeting_end_silence_ms)
        self.play_started_ms: float | None = None

    @property
    def waiting(self) -> bool:
        """The greeting is still on (no message yet)."""
        return self.policy.phase in (Phase.LISTENING, Phase.IN_BEEP)

    def speech_start(self, frame: SpeechStartedFrame) -> None:
        self.policy.speech_start(frame.t_ms)

    def speech_end(self, frame: SpeechEndedFrame) -> None:
        self.policy.speech_end(frame.t_ms)

    def beep(self) -> None:
        self.policy.beep()

    async def beep_end(self) -> None:
        if self.policy.beep_end():
            await self.play()

    def verdict(self, label: str) -> None:
        self.policy.verdict(label)

    async def tick(self) -> None:
        w = self.workflow
        if self.policy.tick(w.t_ms):
            await self.play()
        elif self.play_started_ms is not None:
            # The mark never came back (lost echo): don't hold the line forever.
            if w.t_ms - self.play_started_ms > self.message.duration_ms + 10_000:
                logger.warning(f"{w.call.call_sid}: no mark echo for the message; hanging up")
                await w.hang_up("mark_timeout")

    async def play(self, trigger: str | None = None) -> None:
        """Play the message now (after the beep, the greeting, or because the agent was told to)."""
        w = self.workflow
        self.policy.phase = Phase.PLAYING
        self.policy.trigger = trigger or self.policy.trigger
        self.play_started_ms = w.t_ms
        await w.action(
            "play_message",
            trigger=self.policy.trigger,
            message=self.message.source.name,
            duration_ms=round(self.message.duration_ms),
        )
        await w.play(self.message.pcm, MESSAGE_MARK)

    async def mark(self, frame: MarkResolvedFrame) -> bool:
        """True when the mark was the message's (the call is then hung up)."""
        w = self.workflow
        if frame.mark_name != MESSAGE_MARK or w.ended:
            return False
        self.policy.phase = Phase.DONE
        w.outcome = "message_played" if frame.played else "message_cancelled"
        await w.hang_up(w.outcome)
        return True


class VoicemailDrop(Workflow):
    """Leaves the message after the beep (or the greeting's end), then hangs up once it has played."""

    name = "voicemail_drop"
    audio_chunk_ms = 100  # beeps are forwarded at once; AMD and the greeting-end silence run on 100 ms
    audio_out_chunk_ms = 500  # the message goes out in 500 ms media messages (Pipecat paces them at 2x)

    def __init__(self, call: CallConfig, messages: MessageCache, **kwargs: Any) -> None:
        super().__init__(call, **kwargs)
        self.leaver = VoicemailLeaver(self, resolve_message(call, messages), greeting_end_silence_for(call))
        self._detectors_stopped = False

    async def _stop_detectors_once_playing(self) -> None:
        """The message plays: nothing listens any more, so the detectors stop (the AMD decision holds
        the stop until it has its verdict). The rest of the call costs a fraction of the greeting's."""
        if not self._detectors_stopped and not self.leaver.waiting:
            self._detectors_stopped = True
            await self.push_frame(StopDetectorsFrame(), FrameDirection.UPSTREAM)

    @property
    def policy(self) -> VoicemailDropPolicy:
        return self.leaver.policy

    async def on_speech_start(self, frame: SpeechStartedFrame) -> None:
        self.leaver.speech_start(frame)

    async def on_speech_end(self, frame: SpeechEndedFrame) -> None:
        self.leaver.speech_end(frame)

    async def on_beep(self, frame: BeepFrame) -> None:
        self.leaver.beep()

    async def on_beep_end(self, frame: BeepEndFrame) -> None:
        await self.leaver.beep_end()
        await self._stop_detectors_once_playing()

    async def on_verdict(self, frame: AmdVerdictFrame) -> None:
        self.leaver.verdict(frame.label)
        if not self.leaver.waiting:
            return  # already playing: the beep decided
        if frame.label == "human":
            await self.human_action()
        elif frame.label in ("ivr", "carrier_intercept"):
            await self.hang_up(f"amd_{frame.label}")

    async def on_audio(self) -> None:
        await self.leaver.tick()
        await self._stop_detectors_once_playing()

    async def on_mark(self, frame: MarkResolvedFrame) -> None:
        await self.leaver.mark(frame)


def resolve_message(call: CallConfig, messages: MessageCache) -> Message:
    """The message named by the call's `message` parameter (inside MESSAGES_DIR), else the configured one."""
    s = call.settings
    name = call.params.get("message")
    if name:
        base = s.messages_dir.expanduser().resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise AudioFormatError(f"message {name!r} is not a file in MESSAGES_DIR ({base})")
        return messages.get(path)
    return messages.get(s.voicemail_message)
