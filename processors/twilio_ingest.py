"""Twilio Media Streams ingest: every Twilio event into Pipecat frames, with audio time kept true.

Subclasses Pipecat's TwilioFrameSerializer (µ-law codec, `clear`, DTMF, REST hang-up stay Pipecat's) and
adds what a phone network and a hostile client need:
- lost packets become the right length of silence; duplicated or reordered packets are dropped;
- a timestamp or chunk that jumps further than the gap-fill cap is a new baseline (one outlier is
  ignored), so real audio that follows is never dropped;
- the stream is bounded: audio may run at most STREAM_MAX_AHEAD_MS ahead of wall time, messages per
  second are capped, payloads are whole 20 ms frames up to a cap; a stream that keeps exceeding a limit
  is reported through `on_violation` (the server closes it);
- every malformed, unknown, binary, oversized, non-finite or too-deep message is counted, never raised.
Counters add up: `messages` = every message seen = the `event_*` and `unknown_event` counters plus the
refusals counted before an event is known (rate_limited, binary, oversize, malformed_json, bad_event).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    KeypadEntry,
)
from pipecat.serializers.twilio import TwilioFrameSerializer

from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, pcm_to_ulaw, ulaw_to_pcm
from processors.frames import TwilioMarkFrame, TwilioStartFrame, TwilioStopFrame

MAX_MESSAGE_BYTES = 16 * 1024  # Twilio messages are < 1 KB; the socket itself stops at WS_MAX_SIZE (64 KiB)
MAX_GAP_FILL_MS = 5_000  # a jump bigger than this is a broken timestamp, not lost audio
MAX_JUMP_CHUNKS = MAX_GAP_FILL_MS // 20
SAMPLES_PER_MS = SAMPLE_RATE // 1000
MAX_COUNTER = 2**53  # chunk / timestamp values beyond this are garbage
PRE_DECODE_REFUSALS = ("rate_limited", "binary", "oversize", "malformed_json", "non_finite", "too_deep", "bad_event")
_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StreamLimits:
    """Per-stream bounds (0 disables one): audio ahead of wall time, message rate, payload size."""

    max_ahead_ms: float = 1500.0
    max_messages_per_sec: float = 150.0
    violation_secs: float = 2.0  # a limit exceeded continuously this long closes the stream
    burst_secs: float = 5.0  # the rate limit lets this many seconds' worth through at once (after a stall)
    max_excess: int = 250  # ... and a stream is closed at once when this many messages are dropped in a row
    max_frames_per_message: int = 8  # Twilio sends one 20 ms frame (160 bytes) per message


UNBOUNDED = StreamLimits(max_ahead_ms=0, max_messages_per_sec=0)


@dataclass
class _Baseline:
    """Where Twilio's clock says audio sample 0 was (timestamp ms) and the last chunk number seen."""

    ts_base: float | None
    last_chunk: int | None


class TwilioIngestSerializer(TwilioFrameSerializer):
    """Twilio <-> Pipecat at 8 kHz on both sides (no resampling on the hot path).

    `counters` says what happened on the stream: frames in, gaps filled, duplicates dropped, bad input.
    """

    def __init__(
        self,
        stream_sid: str,
        call_sid: str | None = None,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_base_url: str | None = None,
        limits: StreamLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_violation: Callable[[str], Awaitable[None]] | None = None,
        hang_up_timeout_secs: float = 10.0,
    ) -> None:
        # Hang up through the REST API only when we can authenticate; dev mode just closes the socket.
        hang_up = bool(call_sid and account_sid and auth_token)
        params = TwilioFrameSerializer.InputParams(
            twilio_sample_rate=SAMPLE_RATE, sample_rate=SAMPLE_RATE, auto_hang_up=hang_up
        )
        super().__init__(
            stream_sid,
            call_sid=call_sid,
            account_sid=account_sid,
            auth_token=auth_token,
            base_url=api_base_url,
            params=params,
        )
        self.counters: Counter[str] = Counter()
        self.limits = limits or StreamLimits()
        self.on_violation = on_violation
        self.hang_up_timeout_secs = hang_up_timeout_secs
        self._clock = clock
        self._stopped = False
        self._handed_off = False
        self._closing = False
        self._base = _Baseline(None, None)
        self._candidate: _Baseline | None = None  # a jump's baseline, adopted if the next packet agrees
        self._samples_in = 0  # samples emitted so far = audio time
        self._t0: float | None = None  # wall time of the first media packet
        self._bucket = self.limits.max_messages_per_sec * self.limits.burst_secs  # token bucket for the rate
        self._bucket_at: float | None = None
        self._violation_since: float | None = None
        self._violation_last = 0.0
        self._violation_drops = 0
        self._out_remainder = b""  # outbound µ-law not yet a whole 20 ms frame
        # Coalescing (off until `coalesce()`): inbound packets held until a chunk boundary.
        self._chunk = 0
        self._held: list[bytes] = []
        self._emitted = 0  # samples handed on so far
        self._sink: Callable[[InputAudioRawFrame], Awaitable[None]] | None = None
        self._pass_through: Callable[[], bool] = lambda: False
        self._current_chunk: Callable[[], int] | None = None

    def coalesce(
        self,
        chunk_ms: int,
        sink: Callable[[InputAudioRawFrame], Awaitable[None]],
        pass_through: Callable[[], bool] | None = None,
        current_chunk_ms: Callable[[], int] | None = None,
    ) -> None:
        """Hand inbound audio on in `chunk_ms` frames instead of Twilio's 20 ms packets.

        Why: every frame costs each processor of the call a queue hop and a task switch; at 150
        calls, 50 packets a second each is most of the server's CPU. A frame leaves when the audio
        crosses a multiple of `chunk_ms` from the start of the stream (so downstream chunking, e.g.
        AMD's 100 ms steps, stays aligned), and every packet leaves at once while `pass_through()`
        says so (the beep detector following a tone: the beep's end must not wait). Held audio is
        handed to `sink` (the input transport's audio queue) before any other event, and `stop`
        ends the holding. Audio time is unchanged: the same samples, in order, just fewer frames.
        `current_chunk_ms()`, when given, is asked at each packet: the chunk may grow during the call
        (the beep detector forwards coarser chunks once detection has stopped).
        """
        self._chunk = chunk_ms * SAMPLES_PER_MS
        self._current_chunk = current_chunk_ms
        self._sink = sink
        self._pass_through = pass_through or (lambda: False)

    def _take_held(self) -> InputAudioRawFrame | None:
        if not self._held:
            return None
        audio = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        self._emitted = self._samples_in
        return InputAudioRawFrame(audio=audio, sample_rate=SAMPLE_RATE, num_channels=1)

    async def _flush_held(self) -> None:
        frame = self._take_held()
        if frame is not None and self._sink is not None:
            await self._sink(frame)

    @property
    def stopped(self) -> bool:
        """Twilio sent `stop`: the call is over, but audio before it may still be in the pipeline."""
        return self._stopped

    @property
    def audio_ms(self) -> float:
        """Audio time of the stream so far (received audio + filled gaps)."""
        return self._samples_in / SAMPLES_PER_MS

    # --- inbound -------------------------------------------------------------------------------

    async def deserialize(self, data: str | bytes) -> Frame | None:
        self.counters["messages"] += 1
        if self._closing:
            self.counters["after_close"] += 1
            return None
        if not self._admit():
            self.counters["rate_limited"] += 1
            return await self._violated("message rate")
        msg, problem = decode_message(data)
        if msg is None:
            return self._reject(*problem)
        event = msg.get("event")
        if not isinstance(event, str):
            return self._reject("bad_event", f"event field of type {type(event).__name__}")
        self.counters[f"event_{event}" if event in _KNOWN_EVENTS else "unknown_event"] += 1
        if self._held and event != "media":
            await self._flush_held()  # audio before the event stays before it
        try:
            match event:
                case "media":
                    return await self._media(msg)
                case "mark":
                    return self._mark(msg)
                case "stop":
                    return self._stop(msg)
                case "dtmf":
                    return self._dtmf(msg)
                case "start":
                    return self._reject("repeated_start", "a second `start` on a running stream")
                case "connected":
                    return None
                case _:
                    return self._log_limited("unknown_event", f"unknown event {event[:40]!r}")
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            return self._reject("bad_fields", f"{event} with bad fields: {e}")
        except Exception as e:  # never fatal: a bug here must not end the call
            return self._reject("unexpected_error", f"{event}: {type(e).__name__}: {e}")

    def _reject(self, counter: str, why: str) -> None:
        self.counters[counter] += 1
        return self._log_limited(counter, why)

    def _log_limited(self, counter: str, why: str) -> None:
        """One line per kind of problem, then every 100th: a hostile stream cannot flood the log."""
        n = self.counters[counter]
        if n <= 1 or n % 100 == 0:
            logger.warning(f"Twilio stream {self._stream_sid}: dropped {why[:200]} (x{n})")
        return None

    def _admit(self) -> bool:
        """Token bucket: max_messages_per_sec, with bursts up to burst_secs' worth (Twilio catching up
        after a network stall sends its backlog at once; the real-time lead still bounds the audio)."""
        rate = self.limits.max_messages_per_sec
        if not rate:
            return True
        now = self._clock()
        if self._bucket_at is not None:
            self._bucket = min(rate * self.limits.burst_secs, self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    async def _violated(self, what: str) -> None:
        """A limit was exceeded: drop. The stream is reported once when it keeps exceeding: for
        violation_secs, or by more than `max_excess` messages (a flood is cut off in a fraction of a
        second; Twilio itself never exceeds either limit by more than a few jittered frames)."""
        now = self._clock()
        if self._violation_since is None or now - self._violation_last > 1.0:
            self._violation_since, self._violation_drops = now, 0
        self._violation_last = now
        self._violation_drops += 1
        if self._violation_drops % 50 == 1:
            await asyncio.sleep(0)  # let neighbours run while a flood is being dropped
        persisting = now - self._violation_since >= self.limits.violation_secs
        if (persisting or self._violation_drops > self.limits.max_excess) and not self._closing:
            self._closing = True
            self.counters["closed_for_violation"] += 1
            logger.warning(
                f"Twilio stream {self._stream_sid}: closing, {what} exceeded "
                f"({self._violation_drops} messages in {now - self._violation_since:.1f} s)"
            )
            if self.on_violation is not None:
                await self.on_violation(what)
        return None

    def _mark(self, msg: dict[str, Any]) -> Frame | None:
        name = _field(msg, "mark").get("name", "")
        if not isinstance(name, str) or len(name) > 256:
            return self._reject("bad_fields", "mark without a string name")
        return TwilioMarkFrame(mark_name=name)

    def _stop(self, msg: dict[str, Any]) -> Frame | None:
        """Validated before it is acted on: a `stop` for another call, or malformed, changes nothing."""
        stop = _field(msg, "stop")
        sid = stop.get("callSid")
        if sid is not None and (not isinstance(sid, str) or (self._call_sid and sid != self._call_sid)):
            return self._reject("bad_stop", f"stop for another call ({str(sid)[:40]!r})")
        self._stopped = True
        return TwilioStopFrame(call_sid=sid, audio_ms=self.audio_ms)

    def _dtmf(self, msg: dict[str, Any]) -> Frame | None:
        digit = _field(msg, "dtmf").get("digit", "")
        try:
            if not isinstance(digit, str):
                raise ValueError(digit)
            return InputDTMFFrame(KeypadEntry(digit))
        except ValueError:
            return self._reject("bad_dtmf", f"dtmf digit {str(digit)[:20]!r}")

    async def _media(self, msg: dict[str, Any]) -> Frame | None:
        media = msg.get("media")
        if not isinstance(media, dict):
            return self._reject("bad_fields", "media without a media object")
        track = media.get("track", "inbound")
        if not isinstance(track, str):
            return self._reject("bad_fields", "media track that is not a string")
        if track not in ("inbound", "inbound_track"):
            self.counters["outbound_track_ignored"] += 1
            return None
        raw = media.get("payload")
        if not isinstance(raw, str) or len(raw) > 4 * (FRAME_SAMPLES * self.limits.max_frames_per_message) // 3 + 4:
            return self._reject("bad_payload", "media payload that is not a string of a sane size")
        try:
            payload = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return self._reject("bad_payload", "media payload that is not base64")
        n = len(payload)
        if not n or n % FRAME_SAMPLES or n > FRAME_SAMPLES * self.limits.max_frames_per_message:
            return self._reject("bad_payload_size", f"payload of {n} bytes (whole 160-byte frames expected)")
        chunk, ts = _counter(media, "chunk", self.counters), _counter(media, "timestamp", self.counters)

        gap = self._place(ts, chunk, n)
        if gap is None:
            self.counters["duplicate_or_late"] += 1
            return None
        gap = self._within_real_time(gap, n)
        if gap is None:
            self.counters["media_ahead"] += 1
            return await self._violated("real time")
        pcm = ulaw_to_pcm(payload)
        if gap:
            self.counters["gaps"] += 1
            self.counters["gap_fill_ms"] += gap // SAMPLES_PER_MS
            pcm = b"\x00\x00" * gap + pcm
        self._samples_in += len(pcm) // 2
        self.counters["media_frames"] += 1
        if not self._chunk:
            return InputAudioRawFrame(audio=pcm, sample_rate=SAMPLE_RATE, num_channels=1)
        self._held.append(pcm)
        chunk = self._current_chunk() * SAMPLES_PER_MS if self._current_chunk is not None else self._chunk
        if self._stopped or chunk <= 0 or self._pass_through() or self._samples_in // chunk > self._emitted // chunk:
            return self._take_held()
        return None

    def _within_real_time(self, gap: int, n: int) -> int | None:
        """The gap, trimmed so audio stays within max_ahead_ms of wall time; None: the packet itself is ahead."""
        ahead_ms = self.limits.max_ahead_ms
        if not ahead_ms:
            return gap
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        allowed = int((now - self._t0) * SAMPLE_RATE + ahead_ms * SAMPLES_PER_MS)
        room = allowed - self._samples_in - n
        if room < 0:
            return None
        if gap > room:
            self.counters["gap_trimmed"] += 1
            return room // FRAME_SAMPLES * FRAME_SAMPLES
        return gap

    def _place(self, ts: int | None, chunk: int | None, n: int) -> int | None:
        """Silence to insert before this packet so audio time follows Twilio's clock; None: drop it (late).

        A jump beyond the gap-fill cap is not filled: the packet is taken as contiguous and its clock
        becomes a candidate baseline, adopted if the next packet agrees with it, forgotten (an outlier)
        if the next packet agrees with the old one."""
        base = self._base
        if base.ts_base is None and ts is not None:
            base.ts_base = ts - self._samples_in / SAMPLES_PER_MS
        if base.last_chunk is None and chunk is not None:
            base.last_chunk = chunk - 1
        verdict = self._fit(base, ts, chunk, n)
        if verdict != "jump":
            if self._candidate is not None:
                self.counters["clock_outliers"] += 1  # the jump was a single bad packet
                self._candidate = None
        elif self._candidate is not None and (v := self._fit(self._candidate, ts, chunk, n)) != "jump":
            self.counters["clock_rebased"] += 1  # two packets agree on the new clock: adopt it
            self._base, self._candidate = self._candidate, None
            base, verdict = self._base, v
        else:
            self.counters["clock_jumps"] += 1
            self._candidate = _Baseline(
                None if ts is None else ts - self._samples_in / SAMPLES_PER_MS, chunk
            )
            on_time = ts is not None and base.ts_base is not None and abs(
                (ts - base.ts_base) * SAMPLES_PER_MS - self._samples_in
            ) < n / 2
            if chunk is not None and base.last_chunk is not None and chunk == base.last_chunk + 1:
                base.last_chunk = chunk  # only its timestamp is wild: it takes its own slot
            elif not on_time and base.ts_base is not None:
                # An extra packet: the old clock makes room for it, so the next packet on it is contiguous.
                base.ts_base -= n / SAMPLES_PER_MS
            return 0
        if verdict == "late":
            return None
        if chunk is not None:
            base.last_chunk = max(chunk, base.last_chunk if base.last_chunk is not None else chunk)
        return verdict

    def _fit(self, base: _Baseline, ts: int | None, chunk: int | None, n: int) -> int | str:
        """Against `base`: "jump", "late", or the silence (samples) before this packet."""
        chunk_delta = None
        if chunk is not None and base.last_chunk is not None:
            chunk_delta = chunk - base.last_chunk
            if abs(chunk_delta) > MAX_JUMP_CHUNKS:
                return "jump"
            if chunk_delta <= 0:
                return "late"
        if ts is not None and base.ts_base is not None:
            delta = (ts - base.ts_base) * SAMPLES_PER_MS - self._samples_in
            if abs(delta) > MAX_GAP_FILL_MS * SAMPLES_PER_MS:
                return "jump"
            if delta <= -n // 2:
                return "late"
            if delta < n // 2:
                return 0  # jitter inside half a frame: keep the stream contiguous
        elif chunk_delta is not None:
            delta = (chunk_delta - 1) * n
        else:
            return 0
        # Fill whole frames only: timestamps move in 20 ms steps.
        return int(round(delta / FRAME_SAMPLES)) * FRAME_SAMPLES

    # --- outbound ------------------------------------------------------------------------------

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, InterruptionFrame):
            self._out_remainder = b""
        if isinstance(frame, AudioRawFrame) and not isinstance(frame, InputAudioRawFrame):
            return self._media_out(frame)
        return await super().serialize(frame)

    def _media_out(self, frame: AudioRawFrame) -> str | None:
        """Outbound audio leaves only in whole 20 ms frames; a remainder waits for the next chunk."""
        if frame.sample_rate != SAMPLE_RATE:
            logger.error(f"outbound audio at {frame.sample_rate} Hz; the pipeline runs at 8 kHz")
            self.counters["bad_outbound_rate"] += 1
            return None
        ulaw = self._out_remainder + pcm_to_ulaw(frame.audio)
        whole = len(ulaw) - len(ulaw) % FRAME_SAMPLES
        self._out_remainder = ulaw[whole:]
        if not whole:
            return None
        self.counters["media_out_ms"] += whole // SAMPLES_PER_MS
        payload = base64.b64encode(ulaw[:whole]).decode("ascii")
        return json.dumps({"event": "media", "streamSid": self._stream_sid, "media": {"payload": payload}})

    def hand_off(self) -> None:
        """The call got new TwiML (e.g. <Dial> to a rep): ending the stream must not hang it up."""
        self._handed_off = True

    async def _hang_up_call(self) -> None:
        """Skip the REST hang-up when Twilio already ended the call (`stop`) or it was handed off."""
        if self._stopped or self._handed_off:
            return
        try:
            await asyncio.wait_for(super()._hang_up_call(), timeout=self.hang_up_timeout_secs)
        except TimeoutError:
            logger.error(f"{self._call_sid}: Twilio's REST API did not answer the hang-up in {self.hang_up_timeout_secs:g} s")


_KNOWN_EVENTS = {"connected", "start", "media", "mark", "stop", "dtmf"}


def decode_message(data: str | bytes) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """A WebSocket message as a Twilio event object, or None and (counter, why) when it is not one.

    Used before `start` (by the server) and after it (by the serializer), so both count alike.
    Non-finite numbers (1e999, NaN, Infinity) and nesting deeper than the C parser allows are refused."""
    if isinstance(data, bytes | bytearray):
        return None, ("binary", f"binary frame of {len(data)} bytes (Twilio sends text)")
    if len(data) > MAX_MESSAGE_BYTES:
        return None, ("oversize", f"message of {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        msg = json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)
    except _NonFinite:
        return None, ("non_finite", "a non-finite number")
    except RecursionError:
        return None, ("too_deep", "JSON nested too deeply")
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError, and ints of over 4300 digits
        return None, ("malformed_json", f"malformed JSON: {data[:80]!r}")
    if not isinstance(msg, dict):
        return None, ("malformed_json", f"JSON that is not an object: {data[:80]!r}")
    return msg, ("", "")


class _NonFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _no_constant(text: str) -> float:
    raise _NonFinite(text)


def _field(msg: dict[str, Any], name: str) -> dict[str, Any]:
    """msg[name] when it is an object; missing = {}; anything else is a bad field (TypeError)."""
    value = msg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} is a {type(value).__name__}, not an object")
    return value


def _counter(media: dict[str, Any], name: str, counters: Counter[str]) -> int | None:
    """Twilio sends chunk/timestamp as decimal strings; a value that is not one is counted and ignored."""
    value = media.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNTER:
        return value
    counters[f"bad_{name}"] += 1
    return None


def parse_start(msg: dict[str, Any]) -> TwilioStartFrame:
    """Validate a `start` message (raises ValueError with the reason)."""
    start = msg.get("start")
    if not isinstance(start, dict):
        raise ValueError("start message without a start object")
    stream_sid = msg.get("streamSid") or start.get("streamSid")
    call_sid = start.get("callSid")
    account_sid = start.get("accountSid", "")
    for name, value in (("streamSid", stream_sid), ("callSid", call_sid)):
        if not isinstance(value, str) or not _SID.fullmatch(value):
            raise ValueError(f"start message without a valid {name}")
    if not isinstance(account_sid, str) or (account_sid and not _SID.fullmatch(account_sid)):
        raise ValueError("start message with an invalid accountSid")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or len(params) > 32:
        raise ValueError("customParameters is not an object of at most 32 entries")
    for k, v in params.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512 or _CONTROL.search(k) or _CONTROL.search(v):
            raise ValueError("customParameters with a non-string, oversized or control-character entry")
    return TwilioStartFrame(
        stream_sid=stream_sid, call_sid=call_sid, account_sid=account_sid, custom_parameters=dict(params)
    )


__all__ = [
    "TwilioIngestSerializer",
    "StreamLimits",
    "UNBOUNDED",
    "decode_message",
    "parse_start",
    "MAX_MESSAGE_BYTES",
    "PRE_DECODE_REFUSALS",
    "ulaw_to_pcm",
]
