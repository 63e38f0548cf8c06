"""callgate's own Pipecat frames.

Every event frame carries `t_ms`, the call's *audio time* in milliseconds (samples received / 8),
never wall-clock time, so a replayed file and a live call report the same numbers. Frames that are
call events also know how to render themselves as the public JSON event of `callgate replay --json`.

Field names avoid those Pipecat reserves on Frame (`id`, `name`, `pts`, `metadata`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import ControlFrame, DataFrame, SystemFrame


class CallEvent:
    """Mixin: a frame that is also a public call event (`{"event": ..., "t_ms": ...}`)."""

    event_name: str = "event"

    def to_event(self) -> dict[str, Any]:
        raise NotImplementedError


# --- Twilio ingest -------------------------------------------------------------------------------


@dataclass
class TwilioStartFrame(SystemFrame):
    """The stream's `start` message: who the call is and the TwiML <Parameter>s."""

    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class TwilioMarkFrame(SystemFrame):
    """A mark echoed by Twilio: all audio sent before it has played (or a `clear` flushed it)."""

    mark_name: str = ""


@dataclass
class TwilioStopFrame(SystemFrame):
    """Twilio's `stop`: the call is over on Twilio's side.

    `audio_ms` is the stream's audio time at the stop: the input transport queues audio separately from
    other frames, so this frame can overtake audio still on its way; workflows end once they reach it.
    """

    call_sid: str | None = None
    audio_ms: float | None = None


# --- Playback marks ------------------------------------------------------------------------------


@dataclass
class PlaybackMarkFrame(DataFrame):
    """Ask for a named mark after the audio pushed before it; MarkTracker sends it to Twilio.

    A DataFrame so it stays ordered behind the audio in the output transport's queue.
    """

    mark_name: str = ""


@dataclass
class MarkResolvedFrame(SystemFrame, CallEvent):
    """A mark's fate: `played=True` when its audio really played, False when a `clear` cancelled it."""

    mark_name: str = ""
    played: bool = False
    t_ms: float = 0.0
    event_name = "mark"

    def to_event(self) -> dict[str, Any]:
        return {"event": "mark", "t_ms": round(self.t_ms), "name": self.mark_name, "played": self.played}


# --- Detection events ----------------------------------------------------------------------------


@dataclass
class BeepFrame(SystemFrame, CallEvent):
    """A voicemail beep was detected (pushed while the tone is still sounding)."""

    onset_ms: float = 0.0
    hz: float = 0.0
    t_ms: float = 0.0  # when it was detected
    event_name = "beep"

    def to_event(self) -> dict[str, Any]:
        return {"event": "beep", "t_ms": round(self.t_ms), "onset_ms": round(self.onset_ms), "hz": round(self.hz, 1)}


@dataclass
class BeepEndFrame(SystemFrame, CallEvent):
    """The beep has ended: the moment a voicemail message may start."""

    onset_ms: float = 0.0
    hz: float = 0.0
    duration_ms: float = 0.0
    t_ms: float = 0.0  # end of the tone
    event_name = "beep_end"

    def to_event(self) -> dict[str, Any]:
        return {
            "event": "beep_end",
            "t_ms": round(self.t_ms),
            "hz": round(self.hz, 1),
            "duration_ms": round(self.duration_ms),
        }


@dataclass
class SpeechStartedFrame(SystemFrame, CallEvent):
    """The far end started speaking (Silero VAD), at audio time t_ms."""

    t_ms: float = 0.0
    event_name = "speech_start"

    def to_event(self) -> dict[str, Any]:
        return {"event": "speech_start", "t_ms": round(self.t_ms)}


@dataclass
class SpeechEndedFrame(SystemFrame, CallEvent):
    """The far end stopped speaking, at audio time t_ms (end of the last voiced audio)."""

    t_ms: float = 0.0
    event_name = "speech_end"

    def to_event(self) -> dict[str, Any]:
        return {"event": "speech_end", "t_ms": round(self.t_ms)}


@dataclass
class SpeechCandidateFrame(SystemFrame):
    """The VAD hears voice it has not confirmed as speech yet (`active`, t_ms = its first voiced
    window), or that voice broke off short of a start (not `active`, t_ms = where it broke off).

    A start needs ~100 ms of voice; AMD uses this to hold a "they said a word and went quiet" verdict
    while the far end has audibly resumed. Not a call event: most candidates are noise."""

    t_ms: float = 0.0
    active: bool = True


@dataclass
class StopDetectorsFrame(SystemFrame):
    """Pushed upstream: the call needs no more detection (`amd_only`: no more AMD steps only).

    Why: once AMD has decided, its 100 ms steps feed nobody; once a voicemail_drop's message plays,
    neither do the VAD and the beep detector, and the message is most of such a call. A detector that
    sees it stops analysing and forwards the audio untouched (BeepDetector in coarse chunks), which
    saves its inference and most per-frame work for the rest of the call. AmdDecisionProcessor holds
    a full stop until it has its verdict (the verdict uses AMD steps and speech events); AmdProcessor
    keeps stepping when it records a trace (`callgate tune` replays every step); BeepDetector, the
    first detector, consumes it.
    """

    amd_only: bool = False


@dataclass
class AmdProbabilityFrame(SystemFrame):
    """One step of the AMD model: class probabilities for the audio up to t_ms (every 100 ms)."""

    t_ms: float = 0.0
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class AmdVerdictFrame(SystemFrame, CallEvent):
    """The AMD decision: human, machine, ivr, carrier_intercept or unknown."""

    label: str = "unknown"
    confidence: float = 0.0
    t_ms: float = 0.0
    detector: str = ""
    event_name = "amd"

    def to_event(self) -> dict[str, Any]:
        return {
            "event": "amd",
            "t_ms": round(self.t_ms),
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "detector": self.detector,
        }


# --- Workflow actions ----------------------------------------------------------------------------


@dataclass
class CallActionFrame(SystemFrame, CallEvent):
    """Something the workflow did (`play_message`, `hangup`, `connect`, ...), for logs and replay."""

    action: str = ""
    t_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        return {"event": self.action, "t_ms": round(self.t_ms), **self.details}


@dataclass
class HangupRequestFrame(ControlFrame):
    """A workflow is done with the call: the call controller hangs up once this reaches it."""

    reason: str = ""


# --- Listening: background-speech gate and endpointer (processors/gate.py, processors/endpointer.py) ---


@dataclass
class CallerSpeechStartedFrame(SystemFrame):
    """The gate accepted speech as the caller's, from t_ms (dated back to the VAD onset)."""

    t_ms: float = 0.0


@dataclass
class CallerSpeechTentativeFrame(SystemFrame):
    """The gate's two-stage opening: speech from t_ms *may* be the caller's. The bot pauses at once; a
    CallerSpeechStartedFrame confirms it (a user turn or a barge-in), a CallerSpeechRevokedFrame drops it."""

    t_ms: float = 0.0


@dataclass
class CallerSpeechRevokedFrame(SystemFrame):
    """A tentative opening was background after all (decided at t_ms): the bot resumes, no turn starts."""

    t_ms: float = 0.0


@dataclass
class CallerSpeechEndedFrame(SystemFrame):
    """The caller's speech (as the gate sees it) ended at t_ms: end of the last caller-level window."""

    t_ms: float = 0.0


@dataclass
class BackgroundSpeechFrame(SystemFrame, CallEvent):
    """Speech the gate rejected as background (TV, another talker): it never starts a turn or a barge-in."""

    start_ms: float = 0.0
    end_ms: float = 0.0
    t_ms: float = 0.0
    event_name = "background_speech"

    def to_event(self) -> dict[str, Any]:
        return {
            "event": "background_speech",
            "t_ms": round(self.t_ms),
            "start_ms": round(self.start_ms),
            "end_ms": round(self.end_ms),
        }


@dataclass
class UserTurnStartFrame(SystemFrame, CallEvent):
    """The caller started a turn (gated speech while no turn was open), at audio time t_ms."""

    t_ms: float = 0.0
    event_name = "user_turn_start"

    def to_event(self) -> dict[str, Any]:
        return {"event": "user_turn_start", "t_ms": round(self.t_ms)}


@dataclass
class TurnEndFrame(SystemFrame, CallEvent):
    """The endpointer thinks the caller's turn ended.

    `tentative=True`: greedy, start the LLM now but hold its audio; a TurnCancelledFrame may follow.
    `tentative=False`: final, release the reply (starting it first if no tentative end came before).
    `source` names the deciding signal (smart_turn, text, smart_turn+text, silence); `confidence` is the
    combined completeness probability (None-less: 0 when no model had spoken). `text` is the transcript.
    """

    t_ms: float = 0.0
    source: str = ""
    confidence: float = 0.0
    tentative: bool = False
    silence_ms: float = 0.0
    text: str = ""
    event_name = "turn_end"

    def to_event(self) -> dict[str, Any]:
        return {
            "event": "turn_end",
            "t_ms": round(self.t_ms),
            "source": self.source,
            "confidence": round(self.confidence, 3),
            "tentative": self.tentative,
            "silence_ms": round(self.silence_ms),
        }


@dataclass
class FinalizeTranscriptFrame(SystemFrame):
    """Pushed upstream by the endpointer on a tentative turn end: the STT should finalize what it has heard
    now (Deepgram's `Finalize`) instead of at the VAD's stop, whose silence hangover comes later. The final
    words then arrive sooner for every reply, greedy or not; an STT without such a request ignores it."""

    t_ms: float = 0.0


@dataclass
class TurnCancelledFrame(SystemFrame, CallEvent):
    """The caller went on after a tentative turn end: drop the greedy reply before any audio of it plays."""

    t_ms: float = 0.0
    after_ms: float = 0.0  # how long after the tentative end the caller resumed
    event_name = "turn_cancelled"

    def to_event(self) -> dict[str, Any]:
        return {"event": "turn_cancelled", "t_ms": round(self.t_ms), "after_ms": round(self.after_ms)}
