"""A drop-in for Twilio AMD users: Twilio's AMD parameters in, Twilio's `AnsweredBy` callbacks out.

Code written for Twilio's asynchronous AMD creates calls with `MachineDetection`, `AsyncAmd=true` and
`AsyncAmdStatusCallback`, then branches on the `AnsweredBy` posted there. POST /calls accepts the same
parameter names (`TwilioAmdFields`); they are *not* passed on to Twilio (the detection is callgate's),
they travel with the call (webhook query -> <Parameter>s -> `start.customParameters`, see
`TWILIO_AMD_PARAMS`) and `TwilioAmdReporter`, an observer placed after the workflow, posts callgate's
verdict to the callback with Twilio's field names and values, signed like Twilio signs its requests.

Three parts, each testable alone:
- `TwilioAmdFields` / `TwilioAmdConfig`: parsing and validation (unknown or contradictory -> ValueError
  naming the parameter; FastAPI turns it into a 422);
- `AnsweredByTracker`: plain logic, audio-time events in, at most one `AnsweredBy` out;
- `send_answered_by` / `post_answered_by`: the signed callback, retried with backoff in a background task
  so it never blocks the call.

Label mapping (documented in README, "Coming from Twilio AMD"):
  human -> human; machine -> machine_start (Enable) or, with DetectMessageEnd, machine_end_beep when the
  message starts on a beep, machine_end_silence when it starts on the greeting's end (silence),
  machine_end_other when the call ends or MachineDetectionTimeout passes first; ivr -> machine_start /
  machine_end_other (an automated system: no beep to wait for); carrier_intercept -> unknown (neither a
  person nor a mailbox); unknown (no answer, preset timeout) -> unknown. A beep before any verdict is
  itself proof of a machine. `fax` is never produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from twilio.request_validator import RequestValidator

from callgate.audio import SAMPLE_RATE
from pipelines.call import CallConfig
from processors.frames import (
    AmdVerdictFrame,
    BeepEndFrame,
    BeepFrame,
    CallActionFrame,
    SpeechStartedFrame,
)

# The Twilio AMD parameters that travel from POST /calls to the call's pipeline (callgate/edge/stream.py's
# PASSTHROUGH_PARAMS includes them). Extend here, in one place.
MAX_AMD_PARAM_CHARS = 2000  # a callback URL's length; every AMD parameter is held to it, never cut
TWILIO_AMD_PARAMS: tuple[str, ...] = (
    "MachineDetection",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
    "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout",
)
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "unknown")
# Workflows that end the call at a machine verdict: there is no message end to wait for.
HANGS_UP_ON_MACHINE = frozenset({"parallel_dial", "power_dial"})
DEFAULT_TIMEOUT_SECS = 30  # Twilio's MachineDetectionTimeout default
RETRY_DELAYS_SECS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # after the first try: 6 tries over ~15 s
_AMD_PREFIXES = ("machinedetection", "asyncamd")

# Twilio parameter -> what callgate does with it (POST /calls echoes this; README has the same table).
BEHAVIOUR: dict[str, str] = {
    "MachineDetection": "Enable: AnsweredBy at callgate's verdict (human / machine_start / unknown). "
    "DetectMessageEnd: a machine is reported when its greeting ends: machine_end_beep (the message starts "
    "on the beep), machine_end_silence (on the greeting's end), machine_end_other (neither before the "
    "call ends or the timeout); voicemail_drop only (the dial workflows hang up on a machine at once).",
    "AsyncAmd": "must be true when a callback is given: callgate's AMD is always asynchronous (it runs on "
    "the media stream while the call's own TwiML is callgate's).",
    "AsyncAmdStatusCallback": "callgate POSTs (or GETs) AccountSid, CallSid, AnsweredBy, "
    "MachineDetectionDuration here, signed with X-Twilio-Signature (the account's auth token); retried "
    "with backoff.",
    "AsyncAmdStatusCallbackMethod": "POST (default) or GET, as Twilio.",
    "MachineDetectionTimeout": "seconds (3-59, default 30) after which, with no AnsweredBy yet, callgate "
    "reports unknown (or machine_end_other after a machine verdict whose greeting has not ended).",
    "MachineDetectionSpeechThreshold": "validated (1000-6000 ms) but has no callgate equivalent: the model "
    "calls machine from what the greeting sounds like, typically within a second of its start, not after "
    "a fixed length of speech. Nearest preset behaviour: the workflow's AMD preset (pipelines/presets).",
    "MachineDetectionSpeechEndThreshold": "voicemail_drop: the silence after speech that ends a greeting "
    "without a beep (machine_end_silence, message start) for this call, instead of "
    "GREETING_END_SILENCE_SECS. The human verdict keeps its preset's 300-400 ms of silence.",
    "MachineDetectionSilenceTimeout": "ms of initial silence (2000-10000) after which, when nobody has "
    "spoken and there is no verdict yet, callgate reports unknown (the preset's own no-answer rule may "
    "report it earlier).",
}


# --- parameters ------------------------------------------------------------------------------------


def _ms_range(name: str, lo: int, hi: int, unit: str = "ms"):
    def check(v: int | None) -> int | None:
        if v is not None and not lo <= v <= hi:
            raise ValueError(f"{name} must be {lo}-{hi} {unit} (Twilio's range), got {v}")
        return v

    return check


class TwilioAmdFields(BaseModel):
    """Twilio's AMD parameters under Twilio's names; a base for request models (POST /calls).

    Any other parameter name that looks like Twilio AMD (`MachineDetectionX`, `machine_detection`,
    `asyncAmd`, ...) is refused by name, never ignored.
    """

    machine_detection: str | None = Field(None, alias="MachineDetection", description="Enable | DetectMessageEnd")
    async_amd: bool | None = Field(None, alias="AsyncAmd")
    async_amd_status_callback: str | None = Field(
        None, alias="AsyncAmdStatusCallback", max_length=MAX_AMD_PARAM_CHARS
    )
    async_amd_status_callback_method: str | None = Field(None, alias="AsyncAmdStatusCallbackMethod")
    machine_detection_timeout: int | None = Field(None, alias="MachineDetectionTimeout", description="seconds")
    machine_detection_speech_threshold: int | None = Field(None, alias="MachineDetectionSpeechThreshold")
    machine_detection_speech_end_threshold: int | None = Field(None, alias="MachineDetectionSpeechEndThreshold")
    machine_detection_silence_timeout: int | None = Field(None, alias="MachineDetectionSilenceTimeout")

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                norm = str(key).replace("_", "").lower()
                if norm.startswith(_AMD_PREFIXES) and key not in TWILIO_AMD_PARAMS:
                    raise ValueError(
                        f"unknown AMD parameter {key!r}; Twilio's names are accepted: {', '.join(TWILIO_AMD_PARAMS)}"
                    )
        return data

    @field_validator("machine_detection")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        if v is not None and v not in ("Enable", "DetectMessageEnd"):
            raise ValueError(f"MachineDetection must be Enable or DetectMessageEnd, got {v!r}")
        return v

    @field_validator("async_amd_status_callback")
    @classmethod
    def _callback(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"AsyncAmdStatusCallback must be an absolute http(s) URL, got {v!r}")
        return v

    @field_validator("async_amd_status_callback_method")
    @classmethod
    def _method(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in ("GET", "POST"):
            raise ValueError(f"AsyncAmdStatusCallbackMethod must be GET or POST, got {v!r}")
        return v.upper() if v is not None else None

    _timeout = field_validator("machine_detection_timeout")(_ms_range("MachineDetectionTimeout", 3, 59, "seconds"))
    _speech = field_validator("machine_detection_speech_threshold")(
        _ms_range("MachineDetectionSpeechThreshold", 1000, 6000)
    )
    _speech_end = field_validator("machine_detection_speech_end_threshold")(
        _ms_range("MachineDetectionSpeechEndThreshold", 500, 5000)
    )
    _silence = field_validator("machine_detection_silence_timeout")(
        _ms_range("MachineDetectionSilenceTimeout", 2000, 10000)
    )

    @model_validator(mode="after")
    def _consistent(self) -> TwilioAmdFields:
        given = self.twilio_amd_params()
        if self.machine_detection is None:
            others = [k for k in given if k != "MachineDetection"]
            if others:
                raise ValueError(f"{others[0]} needs MachineDetection (Enable or DetectMessageEnd)")
            return self
        callback = self.async_amd_status_callback is not None
        if callback and self.async_amd is not True:
            raise ValueError(
                "AsyncAmdStatusCallback needs AsyncAmd=true (callgate's AMD is always asynchronous; "
                "there is no synchronous AnsweredBy on the call's own webhook)"
            )
        if self.async_amd is True and not callback:
            raise ValueError("AsyncAmd=true needs AsyncAmdStatusCallback (where AnsweredBy is posted)")
        if self.async_amd_status_callback_method is not None and not callback:
            raise ValueError("AsyncAmdStatusCallbackMethod needs AsyncAmdStatusCallback")
        workflow = getattr(self, "workflow", None)
        if self.machine_detection == "DetectMessageEnd" and workflow in HANGS_UP_ON_MACHINE:
            raise ValueError(
                f"MachineDetection=DetectMessageEnd cannot be used with workflow {workflow!r}, which hangs up "
                "on a machine at the verdict; use MachineDetection=Enable, or workflow voicemail_drop"
            )
        return self

    def twilio_amd_params(self) -> dict[str, str]:
        """The parameters that were given, under Twilio's names, as strings (what travels with the call)."""
        out: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            if info.alias in TWILIO_AMD_PARAMS:
                value = getattr(self, name)
                if value is not None:
                    out[info.alias] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    def twilio_amd_behaviour(self) -> dict[str, str]:
        """For each given parameter, what callgate does with it (POST /calls returns this: nothing is
        silently ignored)."""
        return {k: BEHAVIOUR[k] for k in self.twilio_amd_params()}


@dataclass(frozen=True)
class TwilioAmdConfig:
    """One call's Twilio AMD options, defaults applied (times in ms of audio)."""

    detect_message_end: bool
    callback_url: str | None = None
    callback_method: str = "POST"
    timeout_ms: int = DEFAULT_TIMEOUT_SECS * 1000
    silence_timeout_ms: int | None = None
    speech_end_threshold_ms: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TwilioAmdConfig | None:
        """From a call's parameters (other names are ignored here); None when MachineDetection is absent.

        Raises ValueError (naming the parameter) when they are invalid.
        """
        amd = {k: v for k, v in params.items() if k in TWILIO_AMD_PARAMS}
        if not amd:
            return None
        try:
            fields = TwilioAmdFields.model_validate(amd)
        except ValidationError as e:
            raise ValueError("; ".join(err["msg"] for err in e.errors())) from None
        if fields.machine_detection is None:
            return None
        return cls(
            detect_message_end=fields.machine_detection == "DetectMessageEnd",
            callback_url=fields.async_amd_status_callback,
            callback_method=fields.async_amd_status_callback_method or "POST",
            timeout_ms=(fields.machine_detection_timeout or DEFAULT_TIMEOUT_SECS) * 1000,
            silence_timeout_ms=fields.machine_detection_silence_timeout,
            speech_end_threshold_ms=fields.machine_detection_speech_end_threshold,
        )


def greeting_end_silence_ms(params: Mapping[str, str]) -> float | None:
    """voicemail_drop's greeting-end silence for this call (MachineDetectionSpeechEndThreshold), if given."""
    try:
        cfg = TwilioAmdConfig.from_params(params)
    except ValueError:
        return None  # TwilioAmdReporter logs the problem
    return float(cfg.speech_end_threshold_ms) if cfg and cfg.speech_end_threshold_ms else None


# --- the AnsweredBy decision ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnsweredBy:
    """What is reported: Twilio's value, MachineDetectionDuration (ms of call audio) and why."""

    answered_by: str
    duration_ms: int
    cause: str  # callgate's label or event that decided (e.g. "machine", "beep", "timeout")


class AnsweredByTracker:
    """Turns callgate's audio-time events into at most one Twilio `AnsweredBy` (plain logic, no asyncio).

    Every method returns the AnsweredBy on the event that decides it, else None; after that, None.
    """

    def __init__(self, config: TwilioAmdConfig) -> None:
        self.config = config
        self.result: AnsweredBy | None = None
        self.machine_at_ms: float | None = None  # DetectMessageEnd: a machine waiting for its greeting's end
        self.heard_speech = False
        self.last_beep_end_ms: float | None = None

    def _report(self, answered_by: str, t_ms: float, cause: str) -> AnsweredBy | None:
        if self.result is not None:
            return None
        self.result = AnsweredBy(answered_by, max(0, round(t_ms)), cause)
        return self.result

    def speech_start(self, t_ms: float) -> None:
        self.heard_speech = True

    def verdict(self, label: str, t_ms: float) -> AnsweredBy | None:
        if self.result is not None or self.machine_at_ms is not None:
            return None
        if label == "human":
            return self._report("human", t_ms, label)
        if label in ("machine", "ivr"):
            if not self.config.detect_message_end:
                return self._report("machine_start", t_ms, label)
            if label == "ivr":
                return self._report("machine_end_other", t_ms, label)  # an IVR has no beep to wait for
            self.machine_at_ms = t_ms
            return None
        return self._report("unknown", t_ms, label)  # carrier_intercept, unknown

    def beep(self, t_ms: float) -> AnsweredBy | None:
        """A beep was detected (still sounding): proof of a machine."""
        if not self.config.detect_message_end:
            return self._report("machine_start", t_ms, "beep")
        return None

    def beep_end(self, t_ms: float) -> None:
        self.last_beep_end_ms = t_ms

    def message_start(self, trigger: str | None, t_ms: float) -> AnsweredBy | None:
        """The workflow decided the greeting is over (voicemail_drop starts its message)."""
        if not self.config.detect_message_end:
            return self._report("machine_start", t_ms, trigger or "message")
        if trigger == "beep":
            end = self.last_beep_end_ms if self.last_beep_end_ms is not None else t_ms
            return self._report("machine_end_beep", end, "beep")
        if trigger == "silence":
            return self._report("machine_end_silence", t_ms, "silence")
        return self._report("machine_end_other", t_ms, trigger or "message")

    def tick(self, t_ms: float) -> AnsweredBy | None:
        """Audio time advanced: MachineDetectionTimeout and MachineDetectionSilenceTimeout."""
        if self.result is not None:
            return None
        if t_ms >= self.config.timeout_ms:
            pending_machine = self.machine_at_ms is not None
            return self._report("machine_end_other" if pending_machine else "unknown", t_ms, "timeout")
        silence = self.config.silence_timeout_ms
        if silence is not None and not self.heard_speech and self.machine_at_ms is None and t_ms >= silence:
            return self._report("unknown", t_ms, "silence_timeout")
        return None

    def end(self, t_ms: float) -> AnsweredBy | None:
        """The call is over before anything was reported."""
        if self.machine_at_ms is not None:
            return self._report("machine_end_other", t_ms, "call_ended")
        return self._report("unknown", t_ms, "call_ended")


# --- the callback --------------------------------------------------------------------------------


def callback_request(
    url: str, method: str, fields: Mapping[str, str], auth_token: str | None
) -> tuple[str, dict[str, str] | None, dict[str, str]]:
    """(URL, form body or None, headers) of Twilio-style request: X-Twilio-Signature is the
    RequestValidator signature over the URL (+ sorted POST params), with the account's auth token."""
    headers = {"User-Agent": "callgate-amd/1.0 (TwilioProxy-compatible)"}
    if method == "GET":
        sep = "&" if urlsplit(url).query else "?"
        full, form = f"{url}{sep}{urlencode(fields)}", None
        signed: Mapping[str, str] = {}
    else:
        full, form, signed = url, dict(fields), fields
    if auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(full, dict(signed))
    return full, form, headers


async def post_answered_by(
    url: str,
    method: str,
    fields: Mapping[str, str],
    auth_token: str | None,
    *,
    delays: tuple[float, ...] = RETRY_DELAYS_SECS,
    timeout: float = 5.0,
) -> bool:
    """Deliver one callback: retried with backoff on network errors, 5xx and 429; never raises."""
    full, form, headers = callback_request(url, method, fields, auth_token)
    sid = fields.get("CallSid", "")
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        for attempt in range(len(delays) + 1):
            try:
                if form is None:
                    response = await client.get(full, headers=headers)
                else:
                    response = await client.post(full, data=form, headers=headers)
                if response.status_code < 400:
                    return True
                problem = f"answered {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    logger.warning(f"{sid}: AnsweredBy callback {url} {problem}; not retried")
                    return False
            except httpx.HTTPError as e:
                problem = f"failed: {type(e).__name__} {e}"
            if attempt < len(delays):
                logger.info(f"{sid}: AnsweredBy callback {url} {problem}; retry in {delays[attempt]:g} s")
                await asyncio.sleep(delays[attempt])
        logger.warning(f"{sid}: AnsweredBy callback {url} {problem}; gave up after {len(delays) + 1} tries")
        return False


_background: set[asyncio.Task] = set()


def send_answered_by(url: str, method: str, fields: Mapping[str, str], auth_token: str | None) -> asyncio.Task:
    """Fire the callback in the background: it outlives the call's pipeline and never delays it."""
    task = asyncio.get_running_loop().create_task(post_answered_by(url, method, dict(fields), auth_token))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


# --- Pipecat adapter -------------------------------------------------------------------------------


class TwilioAmdReporter(FrameProcessor):
    """Watches the frames after the workflow (verdict, beep, speech, the workflow's `play_message`, the
    call's end) and reports Twilio's AnsweredBy once: an `answered_by` call event, and the signed
    callback when AsyncAmdStatusCallback is set. Forwards every frame untouched.
    """

    def __init__(self, call: CallConfig, config: TwilioAmdConfig, **kwargs: Any) -> None:
        super().__init__(name="twilio-amd-reporter", **kwargs)
        self.call = call
        self.config = config
        self.tracker = AnsweredByTracker(config)
        self._samples = 0
        self.task: asyncio.Task | None = None

    @classmethod
    def for_call(cls, call: CallConfig) -> TwilioAmdReporter | None:
        """A reporter when the call asked for Twilio AMD (MachineDetection given), else None."""
        try:
            config = TwilioAmdConfig.from_params(call.params)
        except ValueError as e:
            logger.error(f"{call.call_sid}: Twilio AMD parameters ignored for this call: {e}")
            return None
        return cls(call, config) if config else None

    @property
    def t_ms(self) -> float:
        return self._samples * 1000 / SAMPLE_RATE

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            result = self._observe(frame)
            if isinstance(frame, EndFrame | CancelFrame):
                result = result or self.tracker.end(self.t_ms)
            if result is not None:
                await self._deliver(result)
        await self.push_frame(frame, direction)

    def _observe(self, frame: Frame) -> AnsweredBy | None:
        tr = self.tracker
        if isinstance(frame, InputAudioRawFrame):
            self._samples += len(frame.audio) // 2
            return tr.tick(self.t_ms)
        if isinstance(frame, SpeechStartedFrame):
            tr.speech_start(frame.t_ms)
        elif isinstance(frame, AmdVerdictFrame):
            return tr.verdict(frame.label, frame.t_ms)
        elif isinstance(frame, BeepFrame):
            return tr.beep(frame.t_ms)
        elif isinstance(frame, BeepEndFrame):
            tr.beep_end(frame.t_ms)
        elif isinstance(frame, CallActionFrame) and frame.action == "play_message":
            return tr.message_start(frame.details.get("trigger"), frame.t_ms)
        return None

    async def _deliver(self, result: AnsweredBy) -> None:
        s = self.call.settings
        fields = {
            "AccountSid": s.twilio_account_sid or "",
            "CallSid": self.call.call_sid,
            "AnsweredBy": result.answered_by,
            "MachineDetectionDuration": str(result.duration_ms),
        }
        url = self.config.callback_url
        logger.info(f"{self.call.call_sid}: AnsweredBy={result.answered_by} at {result.duration_ms} ms ({result.cause})")
        if url:
            if not s.twilio_auth_token:
                logger.warning(f"{self.call.call_sid}: dev mode: the AnsweredBy callback is not signed")
            self.task = send_answered_by(url, self.config.callback_method, fields, s.twilio_auth_token)
        await self.push_frame(
            CallActionFrame(
                action="answered_by",
                t_ms=self.t_ms,
                details={
                    "answered_by": result.answered_by,
                    "machine_detection_duration_ms": result.duration_ms,
                    "cause": result.cause,
                    "callback": bool(url),
                },
            )
        )
