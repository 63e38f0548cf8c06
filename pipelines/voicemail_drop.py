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


class VoicemailDrop(Workflow):
    """Leaves the message after the beep (or the greeting's end), then hangs up once it has played."""

    name = "voicemail_drop"
    audio_chunk_ms = 100  # beeps are forwarded at once; AMD and the greeting-end silence run on 100 ms

    def __init__(self, call: CallConfig, messages: MessageCache, **kwargs: Any) -> None:
        super().__init__(call, **kwargs)
        s = call.settings
        # Twilio AMD drop-in: MachineDetectionSpeechEndThreshold, when given, is this call's greeting-end silence.
        end_silence_ms = greeting_end_silence_ms(call.params) or s.greeting_end_silence_secs * 1000
        self.policy = VoicemailDropPolicy(greeting_end_silence_ms=end_silence_ms)
        self._message: Message = resolve_message(call, messages)
        self._play_started_ms: float | None = None

    async def on_speech_start(self, frame: SpeechStartedFrame) -> None:
        self.policy.speech_start(frame.t_ms)

    async def on_speech_end(self, frame: SpeechEndedFrame) -> None:
        self.policy.speech_end(frame.t_ms)

    async def on_beep(self, frame: BeepFrame) -> None:
        self.policy.beep()

    async def on_beep_end(self, frame: BeepEndFrame) -> None:
        if self.policy.beep_end():
            await self._play()

    async def on_verdict(self, frame: AmdVerdictFrame) -> None:
        self.policy.verdict(frame.label)
        if self.policy.phase is not Phase.LISTENING and self.policy.phase is not Phase.IN_BEEP:
            return  # already playing: the beep decided
        if frame.label == "human":
            await self.human_action()
        elif frame.label in ("ivr", "carrier_intercept"):
            await self.hang_up(f"amd_{frame.label}")

    async def on_audio(self) -> None:
        if self.policy.tick(self.t_ms):
            await self._play()
        elif self._play_started_ms is not None:
            # The mark never came back (lost echo): don't hold the line forever.
            if self.t_ms - self._play_started_ms > self._message.duration_ms + 10_000:
                logger.warning(f"{self.call.call_sid}: no mark echo for the message; hanging up")
                await self.hang_up("mark_timeout")

    async def _play(self) -> None:
        self._play_started_ms = self.t_ms
        await self.action(
            "play_message",
            trigger=self.policy.trigger,
            message=self._message.source.name,
            duration_ms=round(self._message.duration_ms),
        )
        await self.play(self._message.pcm, MESSAGE_MARK)

    async def on_mark(self, frame: MarkResolvedFrame) -> None:
        if frame.mark_name != MESSAGE_MARK or self.ended:
            return
        self.policy.phase = Phase.DONE
        self.outcome = "message_played" if frame.played else "message_cancelled"
        await self.hang_up(self.outcome)


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
