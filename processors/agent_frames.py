"""Frames of the conversation (agent workflow): the bot's playback, barge-in decisions, transcript events.

Kept apart from processors/frames.py (detection and Twilio frames). Every event frame carries `t_ms`,
the call's audio time; those that are public events render themselves like the others (CallEvent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import DataFrame, InterruptionFrame, SystemFrame

from processors.frames import CallEvent


@dataclass
class BotPlaybackFrame(SystemFrame):
    """From the player, upstream: the bot's audio started (`speaking`) or ran out at Twilio."""

    speaking: bool = False
    t_ms: float = 0.0


@dataclass
class BotPauseFrame(SystemFrame):
    """Caller speech over the bot: stop feeding audio (no `clear`) while the barge-in is decided."""

    t_ms: float = 0.0
    onset_ms: float = 0.0


@dataclass
class BotResumeFrame(SystemFrame, CallEvent):
    """It was a backchannel or noise: the bot goes on (`reason`: backchannel, noise, false_interruption, or
    background: the gate revoked its tentative opening)."""

    t_ms: float = 0.0
    onset_ms: float = 0.0
    reason: str = ""
    text: str = ""

    def to_event(self) -> dict[str, Any]:
        name = {"backchannel": "backchannel", "false_interruption": "false_interruption_resumed",
                "background": "background_ignored"}.get(self.reason, "noise_ignored")
        return {"event": name, "t_ms": round(self.t_ms), "onset_ms": round(self.onset_ms), "text": self.text}


@dataclass
class BargeInFrame(SystemFrame):
    """A confirmed barge-in: the workflow clears Twilio's buffer and cancels the reply."""

    t_ms: float = 0.0
    onset_ms: float = 0.0
    text: str = ""
    early: bool = False  # decided by the early audio cue (before any words)
    speech_end_ms: float | None = None  # set when the words that decided it came after the caller stopped


@dataclass
class BotHoldFrame(SystemFrame):
    """Greedy replies: hold (`hold=True`) or release the audio of bot turn `turn` at the player.

    A held turn is synthesized and queued but none of its audio goes to Twilio until it is released.
    """

    turn: int = 0
    hold: bool = True


@dataclass
class ReplyCancelFrame(InterruptionFrame):
    """Scrap the held (never played) reply of bot turn `turn`: the LLM and the TTS stop as on an
    interruption, the player drops that turn's queued audio and stops the frame, so Twilio gets no
    `clear` and nothing played is touched."""

    turn: int = 0


@dataclass
class BotClauseFrame(DataFrame):
    """The text of the next clause sent to the TTS (so the player can name its word marks)."""

    text: str = ""
    turn: int = 0
    index: int = 0


@dataclass
class BotTurnStartFrame(DataFrame):
    """Sent just before the LLM request of bot turn `turn` (so the clauses are numbered for it)."""

    turn: int = 0


@dataclass
class BotSayFrame(DataFrame):
    """Speak this text as bot turn `turn`, without the LLM (first message, goodbye, voicemail)."""

    text: str = ""
    turn: int = 0


@dataclass
class BotReplyEndFrame(DataFrame):
    """The LLM reply of `turn` is complete: no more clauses follow."""

    turn: int = 0


@dataclass
class LlmFirstTokenFrame(SystemFrame):
    """The first text token of a reply passed the clause splitter (latency report)."""

    turn: int = 0
    wall: float = 0.0


@dataclass
class TtsRequestFrame(SystemFrame):
    """A clause was handed to the TTS (latency report)."""

    turn: int = 0
    wall: float = 0.0


@dataclass
class AgentEventFrame(SystemFrame, CallEvent):
    """A conversation event for the log and `replay --json` (user_transcript, bot_turn_start, ...)."""

    kind: str = ""
    t_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        return {"event": self.kind, "t_ms": round(self.t_ms), **self.details}
