"""Twilio Media Streams ingest: every Twilio event into Pipecat frames, with audio time kept true.

Subclasses Pipecat's TwilioFrameSerializer (µ-law codec, `clear`, DTMF, REST hang-up stay Pipecat's) and
adds what a phone network needs: lost packets become the right length of silence, duplicated or
reordered packets are dropped, and every malformed, unknown, binary or oversized message is counted and
logged instead of crashing the call.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
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
SAMPLES_PER_MS = SAMPLE_RATE // 1000


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
        self._stopped = False
        self._handed_off = False
        self._last_chunk: int | None = None
        self._ts_base: int | None = None  # Twilio timestamp of audio sample 0
        self._samples_in = 0  # samples emitted so far = audio time
        self._out_remainder = b""  # outbound µ-law not yet a whole 20 ms frame

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
        msg, problem = decode_message(data)
        if msg is None:
            return self._reject(*problem)
        event = msg.get("event")
        self.counters[f"event_{event}" if event in _KNOWN_EVENTS else "unknown_event"] += 1
        try:
            match event:
                case "media":
                    return self._media(msg)
                case "mark":
                    return TwilioMarkFrame(mark_name=str((msg.get("mark") or {}).get("name", "")))
                case "stop":
                    self._stopped = True
                    return TwilioStopFrame(call_sid=(msg.get("stop") or {}).get("callSid"), audio_ms=self.audio_ms)
                case "dtmf":
                    return self._dtmf(msg)
                case "start":
                    return self._reject("repeated_start", "a second `start` on a running stream")
                case "connected":
                    return None
                case _:
                    logger.warning(f"Twilio stream {self._stream_sid}: unknown event {event!r}")
                    return None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return self._reject("bad_fields", f"{event} with bad fields: {e}")

    def _reject(self, counter: str, why: str) -> None:
        self.counters[counter] += 1
        logger.warning(f"Twilio stream {self._stream_sid}: dropped {why}")
        return None

    def _dtmf(self, msg: dict[str, Any]) -> Frame | None:
        digit = str((msg.get("dtmf") or {}).get("digit", ""))
        try:
            return InputDTMFFrame(KeypadEntry(digit))
        except ValueError:
            return self._reject("bad_dtmf", f"dtmf digit {digit!r}")

    def _media(self, msg: dict[str, Any]) -> Frame | None:
        media = msg.get("media")
        if not isinstance(media, dict):
            return self._reject("bad_fields", "media without a media object")
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            self.counters["outbound_track_ignored"] += 1
            return None
        try:
            payload = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError):
            return self._reject("bad_payload", "media payload that is not base64")
        if not payload:
            return self._reject("bad_payload", "empty media payload")

        chunk = _as_int(media.get("chunk"))
        if chunk is not None and self._last_chunk is not None and chunk <= self._last_chunk:
            self.counters["duplicate_or_late"] += 1
            return None

        pcm = ulaw_to_pcm(payload)
        gap_samples = self._gap_samples(_as_int(media.get("timestamp")), chunk, len(payload))
        if chunk is not None:
            self._last_chunk = chunk
        if gap_samples < 0:
            # Timestamp says this audio is already covered: a late or duplicated packet.
            self.counters["duplicate_or_late"] += 1
            return None
        if gap_samples:
            self.counters["gaps"] += 1
            self.counters["gap_fill_ms"] += gap_samples // SAMPLES_PER_MS
            pcm = b"\x00\x00" * gap_samples + pcm
        self._samples_in += len(pcm) // 2
        self.counters["media_frames"] += 1
        return InputAudioRawFrame(audio=pcm, sample_rate=SAMPLE_RATE, num_channels=1)

    def _gap_samples(self, ts: int | None, chunk: int | None, n_samples: int) -> int:
        """Silence to insert before this packet so audio time matches Twilio's clock (<0: already have it)."""
        if ts is not None:
            if self._ts_base is None:
                self._ts_base = ts - self._samples_in // SAMPLES_PER_MS
            expected = self._samples_in
            position = (ts - self._ts_base) * SAMPLES_PER_MS
            delta = position - expected
            if delta <= -n_samples // 2:
                return -1
            if delta < n_samples // 2:
                return 0  # jitter inside half a frame: keep the stream contiguous
        elif chunk is not None and self._last_chunk is not None:
            delta = (chunk - self._last_chunk - 1) * n_samples
        else:
            return 0
        if delta > MAX_GAP_FILL_MS * SAMPLES_PER_MS:
            self.counters["gap_capped"] += 1
            delta = MAX_GAP_FILL_MS * SAMPLES_PER_MS
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
        await super()._hang_up_call()


_KNOWN_EVENTS = {"connected", "start", "media", "mark", "stop", "dtmf"}


def decode_message(data: str | bytes) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """A WebSocket message as a Twilio event object, or None and (counter, why) when it is not one.

    Used before `start` (by the server) and after it (by the serializer), so both count alike."""
    if isinstance(data, bytes | bytearray):
        return None, ("binary", f"binary frame of {len(data)} bytes (Twilio sends text)")
    if len(data) > MAX_MESSAGE_BYTES:
        return None, ("oversize", f"message of {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        msg = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, ("malformed_json", f"malformed JSON: {data[:80]!r}")
    if not isinstance(msg, dict):
        return None, ("malformed_json", f"JSON that is not an object: {data[:80]!r}")
    return msg, ("", "")


def _as_int(value: Any) -> int | None:
    """Twilio sends counters as strings; anything unparsable counts as absent."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_start(msg: dict[str, Any]) -> TwilioStartFrame:
    """Validate a `start` message (raises ValueError with the reason)."""
    start = msg.get("start")
    if not isinstance(start, dict):
        raise ValueError("start message without a start object")
    stream_sid = msg.get("streamSid") or start.get("streamSid")
    call_sid = start.get("callSid")
    if not stream_sid or not call_sid:
        raise ValueError("start message without streamSid/callSid")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ValueError("customParameters is not an object")
    return TwilioStartFrame(
        stream_sid=str(stream_sid),
        call_sid=str(call_sid),
        account_sid=str(start.get("accountSid", "")),
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


__all__ = ["TwilioIngestSerializer", "decode_message", "parse_start", "MAX_MESSAGE_BYTES", "ulaw_to_pcm"]
