"""Many simulated Twilio calls on one event loop, cheaply: the load generator of scripts/load.py.

`PhoneCall` (simulator/phone.py) is the faithful, inspectable phone for tests: a task, a timer and a
JSON encode per 20 ms packet, a full JSON decode of every message the server sends. At 150 calls that
alone costs more than a core, on the same two cores as the server it measures. `LoadPhone` keeps what
the load figures need and does it with as little CPU per packet as Python allows:

- one ticker task paces every call (a 5 ms tick sends each call's due packets; a call's packets stay
  on its own 20 ms grid from its answer, and a late tick sends the missed packets at once, as Twilio
  does after a stall), so there is no timer per call and packet;
- the audio's base64 payloads are computed once and shared by every call; a packet is a bytes
  template filled with its counters and written as a WebSocket frame with a zero masking key (a
  valid key: the payload needs no XOR), straight to the transport;
- a message from the server is classified without decoding it: a media message's audio length is
  read from its base64 length; only marks and clears (a few per call) are JSON-decoded.

Playback is modelled as PhoneCall models it (simulator/playback.py, on the call clock: frames sent x
20 ms): the first media message after silence is a `media_start`, marks are echoed when the audio
queued before them has played, `clear` releases pending marks unplayed. The REST stand-in
(simulator/rest.py) hangs calls up through `hangup()`, as it does PhoneCalls.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from twilio.request_validator import RequestValidator

from callgate.audio import FRAME_MS, FRAME_SAMPLES, ULAW_SILENCE, pad_to_frames, pcm_to_ulaw
from simulator.ids import new_sid
from simulator.phone import (
    DEFAULT_FROM,
    DEFAULT_TO,
    STREAM_USER_AGENT,
    WEBHOOK_USER_AGENT,
    RejectedCall,
    parse_twiml,
    webhook_url,
)
from simulator.playback import PlaybackBuffer

TICK_SECS = 0.005
_ZERO_MASK = b"\x00\x00\x00\x00"
_MEDIA = (
    b'{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    b'{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One client-to-server WebSocket frame (FIN, masked with the all-zero key, so unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    return head + _ZERO_MASK + payload


@dataclass(frozen=True)
class PreparedAudio:
    """A call's audio as base64 µ-law packets, computed once for every call that plays it."""

    payloads: tuple[bytes, ...]
    silence: bytes = base64.b64encode(ULAW_SILENCE * FRAME_SAMPLES)

    @classmethod
    def from_pcm(cls, pcm: np.ndarray) -> PreparedAudio:
        ulaw = pad_to_frames(pcm_to_ulaw(np.asarray(pcm, dtype="<i2").tobytes()))
        return cls(tuple(base64.b64encode(ulaw[i : i + FRAME_SAMPLES]) for i in range(0, len(ulaw), FRAME_SAMPLES)))


@dataclass
class LoadCall:
    """One call's state: its socket, its clock (packets sent) and its playback model."""

    audio: PreparedAudio
    total_frames: int
    call_sid: str
    account_sid: str
    stream_sid: str = field(default_factory=lambda: new_sid("MZ"))
    to_number: str = DEFAULT_TO
    from_number: str = DEFAULT_FROM
    frames_sent: int = 0
    seq: int = 0
    ended_by: str | None = None
    error: str | None = None
    media_starts: list[int] = field(default_factory=list)  # call time of each playback start (ms)
    media_bytes: int = 0
    marks_echoed: int = 0
    close_code: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    transport: asyncio.Transport | None = None
    next_due: float = 0.0  # loop time the next packet is due
    anchor_frame: int | None = None  # the packet that ends at the reaction's anchor (e.g. the beep's end)
    anchor_sent: float | None = None  # loop time it was written (late when the generator fell behind)
    watch_frame: int | None = None  # playback starts after this packet count as the reply (<= anchor)
    watch_sent: float | None = None
    first_reply_start: float | None = None  # loop time of the first playback start after the watch packet
    buffer: PlaybackBuffer[str] = field(default_factory=PlaybackBuffer)

    def __post_init__(self) -> None:
        self.ended = asyncio.Event()
        self._sid = self.stream_sid.encode()

    @property
    def t_ms(self) -> int:
        return self.frames_sent * FRAME_MS

    def finish(self, reason: str, error: str | None = None) -> None:
        if self.ended_by is None:
            self.ended_by, self.error = reason, error
            self.ended.set()

    # what the REST stand-in calls
    def hangup(self, by: str = "rest") -> bool:
        if self.ended_by is not None:
            return False
        self.finish("hangup")
        return True

    def redirect(self, *, twiml: str | None = None, url: str | None = None) -> bool:
        if self.ended_by is not None:
            return False
        self.finish("update")
        return True

    # --- sending

    def send(self, text: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(text))

    def send_event(self, event: str, body: Mapping[str, Any]) -> None:
        self.seq += 1
        msg = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.stream_sid, **body}
        self.send(json.dumps(msg, separators=(",", ":")).encode())

    def send_next_frame(self) -> bool:
        """The next 20 ms packet; False when the call's audio is over."""
        k = self.frames_sent
        if k >= self.total_frames:
            self.finish("audio_end")
            return False
        payloads = self.audio.payloads
        self.seq += 1
        self.send(_MEDIA % (self.seq, self._sid, k + 1, k * FRAME_MS, payloads[k] if k < len(payloads) else self.audio.silence))
        self.frames_sent = k + 1
        if k == self.anchor_frame:
            self.anchor_sent = asyncio.get_running_loop().time()
        if k == self.watch_frame:
            self.watch_sent = asyncio.get_running_loop().time()
        if self.buffer.pending:
            self._echo_due()
        return True

    def _echo_due(self) -> None:
        while (name := self.buffer.pop_due(self.t_ms)) is not None:
            self._echo(name)

    def _echo(self, name: str) -> None:
        self.marks_echoed += 1
        self.send_event("mark", {"mark": {"name": name}})

    # --- receiving

    def on_message(self, text: bytes) -> None:
        if self.ended_by is not None:
            return
        i = text.find(b'"payload"')
        if i >= 0:  # media: the audio's length is in its base64 length
            start = text.index(b'"', text.index(b":", i + 9)) + 1
            end = text.index(b'"', start)
            n = (end - start) * 3 // 4 - (text[end - 2 : end].count(b"="))
            self.media_bytes += n
            if self.buffer.add_audio(self.t_ms, n / (FRAME_SAMPLES / FRAME_MS)):
                self.media_starts.append(self.t_ms)
                if self.watch_sent is not None and self.first_reply_start is None:
                    self.first_reply_start = asyncio.get_running_loop().time()
            return
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("event") == "mark":
            self.buffer.add_mark(self.t_ms, str((msg.get("mark") or {}).get("name", "")))
            self._echo_due()
        elif msg.get("event") == "clear":
            for name in self.buffer.clear(float(self.t_ms))[1]:
                self._echo(name)


class _WsClient(asyncio.Protocol):
    """The client end of one Media Stream: the upgrade, then unmasked server frames."""

    def __init__(self, call: LoadCall, request: bytes) -> None:
        self.call = call
        self.request = request
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.call.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"connection closed during the upgrade ({exc})"))
        self.call.finish("server_closed")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done():
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            status = self.buf[: self.buf.find(b"\r\n")]
            self.buf = self.buf[head_end + 4 :]
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(RejectedCall(f"WebSocket refused: {status.decode(errors='replace')}"))
                self.call.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, hdr = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, hdr = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, hdr = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if b1 & 0x80:  # servers never mask; be safe anyway
                hdr += 4
            if len(buf) - pos < hdr + n:
                break
            payload = buf[pos + hdr : pos + hdr + n]
            pos += hdr + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        self.buf = buf[pos:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        call = self.call
        if opcode == 0x0 or (opcode == 0x1 and not fin):
            self.fragments.append(payload)
            if not fin:
                return
            payload, self.fragments = b"".join(self.fragments), []
            opcode = 0x1
        if opcode == 0x1:
            call.on_message(payload)
        elif opcode == 0x9:  # ping
            if call.transport is not None and not call.transport.is_closing():
                call.transport.write(ws_frame(payload, 0xA))
        elif opcode == 0x8:
            call.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if call.transport is not None and not call.transport.is_closing():
                call.transport.write(ws_frame(payload[:2], 0x8))
                call.transport.close()
            call.finish("server_closed")


class LoadPhone:
    """Places calls like Twilio on one loop: `await phone.call(audio, ...)` per call, many at once.

    `webhook`: the server's voice webhook URL. The REST stand-in (optional) is where the server's
    hang-ups land. Use as `async with LoadPhone(...) as phone:` (one HTTP client, one ticker)."""

    def __init__(
        self,
        webhook: str,
        *,
        auth_token: str | None = None,
        account_sid: str | None = None,
        rest: Any = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.webhook = webhook
        self.auth_token = auth_token
        self.account_sid = account_sid or new_sid("AC")
        self.rest = rest
        self.open_timeout = open_timeout
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._live: list[LoadCall] = []
        self._ticker: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.late_ticks = 0  # ticks that came more than one tick late (the generator fell behind)
        self.max_tick_lag_ms = 0.0

    async def __aenter__(self) -> LoadPhone:
        self._http = httpx.AsyncClient(
            timeout=self.open_timeout, trust_env=False, limits=httpx.Limits(max_connections=64)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._http is not None:
            await self._http.aclose()

    async def call(
        self,
        audio: PreparedAudio,
        *,
        params: Mapping[str, str] | None = None,
        tail_secs: float = 5.0,
        call_sid: str | None = None,
        max_secs: float = 120.0,
        anchor_ms: float | None = None,
        reply_after_ms: float | None = None,
    ) -> LoadCall:
        """One call from webhook to hang-up; never raises for what the server does (see ended_by/error).
        `anchor_ms`: the call time the reaction is timed from; the wall time of the packet that ends
        there and of the server's first playback start after `reply_after_ms` (default: the anchor)
        are kept (the server's reaction on the wall clock, whatever the generator's own lateness did
        to the call clock)."""
        call = LoadCall(
            audio=audio,
            total_frames=len(audio.payloads) + round(tail_secs * 1000 / FRAME_MS),
            call_sid=call_sid or new_sid("CA"),
            account_sid=self.account_sid,
            anchor_frame=None if anchor_ms is None else max(0, int(anchor_ms // FRAME_MS) - 1),
            watch_frame=None if anchor_ms is None else max(0, int((reply_after_ms if reply_after_ms is not None
                                                                    else anchor_ms) // FRAME_MS) - 1),
        )
        if self.rest is not None:
            self.rest.attach(call)
        try:
            await self._run(call, params or {}, max_secs)
        except Exception as e:  # noqa: BLE001 - a broken call is a result
            call.finish("rejected", f"{type(e).__name__}: {e}")
        finally:
            if call in self._live:
                self._live.remove(call)
            if call.transport is not None and not call.transport.is_closing():
                call.transport.close()
            if self.rest is not None:
                self.rest.detach(call)
        return call

    async def _run(self, call: LoadCall, params: Mapping[str, str], max_secs: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        url = webhook_url(self.webhook, params)
        form = {
            "AccountSid": call.account_sid, "ApiVersion": "2010-04-01", "CallSid": call.call_sid,
            "CallStatus": "in-progress", "Called": call.to_number, "Caller": call.from_number,
            "Direction": "outbound-api", "From": call.from_number, "To": call.to_number,
        }
        headers = {"User-Agent": WEBHOOK_USER_AGENT}
        if self._validator:
            headers["X-Twilio-Signature"] = self._validator.compute_signature(url, form)
        assert self._http is not None, "use LoadPhone as `async with`"
        try:
            resp = await self._http.post(url, data=form, headers=headers)
        except httpx.HTTPError as e:
            return call.finish("rejected", f"webhook failed: {type(e).__name__}: {e}")
        call.timings["webhook_ms"] = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            return call.finish("rejected", f"webhook returned HTTP {resp.status_code}")
        twiml = parse_twiml(resp.content)
        t1 = time.perf_counter()
        await self._open(call, twiml.url)
        call.timings["handshake_ms"] = (time.perf_counter() - t1) * 1000
        call.send(b'{"event":"connected","protocol":"Call","version":"1.0.0"}')  # no sequence number
        call.send_event("start", {"start": {
            "accountSid": call.account_sid, "streamSid": call.stream_sid, "callSid": call.call_sid,
            "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dict(twiml.parameters),
        }})
        call.next_due = loop.time()
        self._live.append(call)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        try:
            await asyncio.wait_for(call.ended.wait(), timeout=max_secs)
        except TimeoutError:
            call.finish("timeout", f"call still up after {max_secs:g} s")
        if call.ended_by in ("hangup", "update", "audio_end", "timeout"):
            call.send_event("stop", {"stop": {"accountSid": call.account_sid, "callSid": call.call_sid}})
            if call.transport is not None and not call.transport.is_closing():
                call.transport.write(ws_frame(struct.pack("!H", 1000), 0x8))
                call.transport.close()

    async def _open(self, call: LoadCall, ws_url: str) -> None:
        parts = urlsplit(ws_url)
        if parts.scheme != "ws":
            raise RejectedCall(f"the load generator speaks ws:// only, got {ws_url!r}")
        path = parts.path or "/"
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"User-Agent: {STREAM_USER_AGENT}",
        ]
        if self._validator:
            lines.append(f"X-Twilio-Signature: {self._validator.compute_signature(ws_url, {})}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        proto = _WsClient(call, request)
        async with asyncio.timeout(self.open_timeout):
            await loop.create_connection(lambda: proto, parts.hostname, parts.port or 80)
            await proto.upgraded

    async def _tick(self) -> None:
        """Every TICK_SECS: each live call sends the packets that are due on its 20 ms grid."""
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        nxt = loop.time()
        while self._live:
            now = loop.time()
            lag = now - nxt
            if lag > TICK_SECS:
                self.late_ticks += 1
                self.max_tick_lag_ms = max(self.max_tick_lag_ms, lag * 1000)
            for call in self._live:
                while call.next_due <= now and call.ended_by is None:
                    if not call.send_next_frame():
                        break
                    call.next_due += period
            nxt = max(nxt + TICK_SECS, now)
            await asyncio.sleep(max(0.0, nxt - loop.time()))


def summarize(
    calls: Sequence[LoadCall], anchor_ms: float, must_hang_up: bool = True, reply_after_ms: float | None = None
) -> list[dict[str, Any]]:
    """Per call: ok (audio came, and the server hung up, or with `must_hang_up` False the caller's audio
    ran out with the stream still up), reaction (first audio - anchor), underruns (playback starts
    beyond the expected ones). `reply_after_ms`: the server spoke before (an agent's greeting); the
    reaction is that of the first playback that starts after this call time (the caller's turn
    began: negative when the reply began before the turn's end), missing (a failed call) when none."""
    ends = ("hangup",) if must_hang_up else ("hangup", "audio_end")
    out = []
    for c in calls:
        reply = reply_after_ms is not None
        starts = [t for t in c.media_starts if t > reply_after_ms] if reply else c.media_starts
        expected = 1 + (len(starts) < len(c.media_starts)) if reply else 1
        out.append({
            "ok": c.ended_by in ends and bool(starts),
            "error": c.error or (None if starts else f"no audio from the server{' after the turn began' * reply}"
                                 f" (ended by {c.ended_by})")
            or (None if c.ended_by in ends else f"ended by {c.ended_by} (server close code {c.close_code})"),
            "reaction_ms": starts[0] - anchor_ms if starts else None,
            # the same on the wall clock: anchor packet written -> first audio after it read
            "wall_reaction_ms": None if c.anchor_sent is None or c.first_reply_start is None
            else (c.first_reply_start - c.anchor_sent) * 1000,
            "underruns": max(0, len(c.media_starts) - expected),
            "call_ms": c.t_ms,
            **c.timings,
        })
    return out
