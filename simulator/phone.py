"""A phone that behaves like Twilio: webhook, <Connect><Stream> WebSocket, paced µ-law, marks and clear.

Everything the server does is judged on a *call clock*: the audio time of the frames sent so far
(chunk x 20 ms). The same call therefore yields the same event times whether it streams in real time,
at `speed` x real time, or as fast as the socket allows. Playback of what the server sends is modelled
on that clock the way Twilio plays it: one buffer, played in order, marks echoed when the audio queued
before them would have finished, `clear` drops the buffer and echoes every pending mark at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from callgate.audio import (
    FRAME_MS,
    FRAME_SAMPLES,
    ULAW_SILENCE,
    load_audio,
    pad_to_frames,
    pcm_to_ulaw,
    to_int16,
)
from simulator.ids import new_sid
from simulator.playback import PlaybackBuffer
from simulator.script import Script, ScriptedCaller

if TYPE_CHECKING:
    from simulator.rest import RestStandIn

FRAME_BYTES = FRAME_SAMPLES  # one µ-law byte per sample: 160 bytes = 20 ms
SILENCE_FRAME = ULAW_SILENCE * FRAME_BYTES
BYTES_PER_MS = FRAME_BYTES / FRAME_MS
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
DEFAULT_FROM = "+15005550006"
DEFAULT_TO = "+15551230000"
MAX_SERVER_MESSAGE = 16 * 1024 * 1024

EventSink = Callable[[dict[str, Any]], None]


__all__ = ["new_sid"]  # re-exported: simulator.ids is where it lives (rest.py imports it from there)


class RejectedCall(Exception):
    """The call never got a working stream (unreachable server, HTTP error, bad TwiML, WS refused)."""


# --------------------------------------------------------------------------------------------- webhook


def webhook_url(url: str, params: Mapping[str, str] | None = None) -> str:
    """`url` with `/twiml` added when it has no path, and `params` merged into its query string."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number in 0-65535 raises here)
    except ValueError as e:  # also a broken IPv6 host ("http://[::1")
        raise RejectedCall(f"server URL must be http(s)://host[:port][/path], got {url!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RejectedCall(f"server URL must be http(s)://host[:port][/path], got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/twiml"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if params:
        query = [(k, v) for k, v in query if k not in params] + [(k, str(v)) for k, v in params.items()]
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


@dataclass
class StreamTwiml:
    """What Twilio takes from a <Connect><Stream> response."""

    url: str
    parameters: dict[str, str]
    name: str | None = None


def parse_twiml(text: str | bytes) -> StreamTwiml:
    """Find <Response><Connect><Stream url=...> and its <Parameter>s; RejectedCall with the reason if not."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise RejectedCall(f"bad TwiML (not XML: {e})") from None
    if root.tag != "Response":
        raise RejectedCall(f"bad TwiML: root element is <{root.tag}>, expected <Response>")
    stream = root.find("Connect/Stream")
    if stream is None:
        if root.find("Start/Stream") is not None:
            raise RejectedCall("bad TwiML: <Start><Stream> is a one-way fork; use <Connect><Stream>")
        verbs = ", ".join(f"<{c.tag}>" for c in root) or "nothing"
        raise RejectedCall(f"bad TwiML: no <Connect><Stream> (found {verbs})")
    url = (stream.get("url") or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise RejectedCall(f"bad TwiML: <Stream url={url!r}> must be a ws:// or wss:// URL")
    if parts.query:
        raise RejectedCall(
            f"bad TwiML: <Stream url={url!r}> has a query string (Twilio error 31920); use <Parameter>"
        )
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamTwiml(url=url, parameters=params, name=stream.get("name"))


# ------------------------------------------------------------------------------------- stream client


class StreamClient:
    """One Media Streams WebSocket, Twilio side: builds and sends Twilio's messages, nothing more.

    High-level calls use it through PhoneCall; tests use it directly to send what Twilio never would
    (bad JSON, binary frames, media before start, sequence gaps) over a real socket. Sequence numbers
    come from one shared counter (as Twilio's do) unless `seq=` overrides them for a single message.
    """

    def __init__(self, ws: ClientConnection, *, call_sid: str, account_sid: str, stream_sid: str):
        self.ws = ws
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = stream_sid
        self.seq = 0  # last sequenceNumber used
        self.chunk = 0  # last media chunk number used
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        auth_token: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        stream_sid: str | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        max_size: int | None = MAX_SERVER_MESSAGE,
    ) -> StreamClient:
        """Open `url` like Twilio (signed with `auth_token` when given, no Origin, no compression).

        Raises websockets' InvalidStatus when the server refuses the upgrade (e.g. 403).
        """
        hdrs = dict(headers or {})
        if auth_token:
            hdrs.setdefault("X-Twilio-Signature", RequestValidator(auth_token).compute_signature(url, {}))
        ws = await connect(
            url,
            additional_headers=hdrs,
            user_agent_header=STREAM_USER_AGENT,
            compression=None,
            open_timeout=open_timeout,
            max_size=max_size,
            proxy=None,
            ping_interval=None,
        )
        return cls(
            ws,
            call_sid=call_sid or new_sid("CA"),
            account_sid=account_sid or new_sid("AC"),
            stream_sid=stream_sid or new_sid("MZ"),
        )

    def next_seq(self) -> str:
        """Advance the shared sequence counter."""
        self.seq += 1
        return str(self.seq)

    async def send_raw(self, data: str | bytes) -> None:
        """Send one frame as is: str = text frame, bytes = binary frame."""
        async with self._lock:
            await self.ws.send(data)

    async def send_json(self, obj: Any) -> None:
        """Send `obj` as a JSON text frame, untouched (no sequence number added)."""
        await self.send_raw(json.dumps(obj, separators=(",", ":")))

    async def send_event(
        self, event: str, body: Mapping[str, Any] | None = None, *, seq: str | int | None = None
    ) -> dict[str, Any]:
        """Send {event, sequenceNumber, streamSid, **body}; the counter is used unless `seq` is given."""
        async with self._lock:
            msg: dict[str, Any] = {
                "event": event,
                "sequenceNumber": str(seq) if seq is not None else self.next_seq(),
            }
            msg["streamSid"] = self.stream_sid
            msg.update(body or {})
            await self.ws.send(json.dumps(msg, separators=(",", ":")))
        return msg

    async def send_connected(self) -> dict[str, Any]:
        """Twilio's first message; it carries no sequence number."""
        msg = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        await self.send_json(msg)
        return msg

    async def send_start(
        self,
        custom_parameters: Mapping[str, str] | None = None,
        *,
        tracks: Sequence[str] = ("inbound",),
        seq: str | int | None = None,
    ) -> dict[str, Any]:
        """The `start` message: the only one carrying the TwiML <Parameter>s."""
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": list(tracks),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dict(custom_parameters or {}),
        }
        return await self.send_event("start", {"start": start}, seq=seq)

    async def send_media(
        self,
        payload: bytes,
        *,
        seq: str | int | None = None,
        chunk: int | None = None,
        timestamp: int | None = None,
        track: str = "inbound",
    ) -> dict[str, Any]:
        """One `media` message; chunk counts from 1 and timestamp defaults to (chunk - 1) x 20 ms."""
        if chunk is None:
            self.chunk += 1
            chunk = self.chunk
        if timestamp is None:
            timestamp = (chunk - 1) * FRAME_MS
        media = {
            "track": track,
            "chunk": str(chunk),
            "timestamp": str(timestamp),
            "payload": base64.b64encode(payload).decode(),
        }
        return await self.send_event("media", {"media": media}, seq=seq)

    async def send_dtmf(self, digit: str, *, seq: str | int | None = None) -> dict[str, Any]:
        """A keypress, as Twilio reports it on bidirectional streams."""
        return await self.send_event("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}}, seq=seq)

    async def send_mark(self, name: str, *, seq: str | int | None = None) -> dict[str, Any]:
        """Echo a mark back to the server (what Twilio does once its audio has played)."""
        return await self.send_event("mark", {"mark": {"name": name}}, seq=seq)

    async def send_stop(self, *, seq: str | int | None = None) -> dict[str, Any]:
        """The call ended."""
        return await self.send_event(
            "stop", {"stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}, seq=seq
        )

    async def recv(self, timeout: float | None = None) -> str | bytes:
        """Next frame from the server (ConnectionClosed when it closed, TimeoutError after `timeout`)."""
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def recv_json(self, timeout: float | None = None) -> Any:
        """Next text frame, decoded."""
        return json.loads(await self.recv(timeout))

    @property
    def is_open(self) -> bool:
        """True until either side starts closing."""
        return self.ws.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        """Close code (the server's when it closed first); None while open."""
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        """Close reason; None while open."""
        return self.ws.close_reason

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (Twilio closes with 1000 after `stop`)."""
        await self.ws.close(code, reason)

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------------------------------ the call


@dataclass
class CallReport:
    """What happened: `events` in call time (summary not included) and the final `summary`."""

    events: list[dict[str, Any]]
    summary: dict[str, Any]
    received_ulaw: bytes = b""  # everything the server sent as media, in order (cleared audio included)

    @property
    def ok(self) -> bool:
        """False when the call was rejected before streaming."""
        return self.summary.get("ended_by") != "rejected"

    @property
    def error(self) -> str | None:
        """Why the call was rejected (or the first error), else None."""
        return self.summary.get("error")

    def of(self, event: str) -> list[dict[str, Any]]:
        """The events of one kind, in order."""
        return [e for e in self.events if e["event"] == event]


@dataclass
class _PendingMark:
    name: str
    queued_t_ms: int


# Counters of things a well-behaved server never sends.
PROBLEM_COUNTERS = (
    "odd_sized_media",
    "bad_json",
    "binary_messages",
    "unknown_events",
    "malformed_messages",
    "wrong_stream_sid",
)
COUNTERS = ("media_chunks_received", "media_bytes_received", "marks_received", "clears_received",
            *PROBLEM_COUNTERS, "dtmf_sent")


def _audio_frames(audio: np.ndarray | Path | str) -> list[bytes]:
    if isinstance(audio, str | Path):
        audio = load_audio(audio)
    pcm = np.asarray(audio)
    if pcm.dtype != np.int16:
        pcm = to_int16(pcm.astype(np.float32))
    ulaw = pad_to_frames(pcm_to_ulaw(pcm.astype("<i2").tobytes()))
    return [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]


@dataclass
class PhoneCall:
    """One simulated call answered by `audio` (8 kHz int16 array, or a WAV/.ulaw path).

    `await call.run()` places it and returns a CallReport. While it runs, `hangup()`, `redirect()` (what
    the REST stand-in calls) and `send_dtmf()` act on it; `started` is set once `start` has been sent.
    `speed`: x real time; None = as fast as possible. After the audio, silence is streamed for up to
    `tail_secs` more (Twilio keeps streaming while the call is up) unless the call ends first.
    """

    audio: np.ndarray | Path | str
    url: str
    speed: float | None = 1.0
    auth_token: str | None = None
    account_sid: str | None = None
    params: Mapping[str, str] | None = None
    rest: RestStandIn | None = None
    tail_secs: float = 20.0
    on_event: EventSink | None = None
    call_sid: str | None = None
    from_number: str = DEFAULT_FROM
    to_number: str = DEFAULT_TO
    dtmf: Sequence[tuple[int, str]] = ()
    extra_form: Mapping[str, str] | None = None
    http_timeout: float = 10.0
    script: Script | None = None  # a scripted caller (simulator/script.py) instead of fixed audio
    network_delay_ms: float = 0.0  # one-way delay on the WebSocket, both directions (call time)

    events: list[dict[str, Any]] = field(default_factory=list, init=False)
    frames_sent: int = field(default=0, init=False)
    ended_by: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.speed is not None and not self.speed > 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.call_sid = self.call_sid or new_sid("CA")
        self.account_sid = self.account_sid or new_sid("AC")
        self.stream_sid = new_sid("MZ")
        self.started = asyncio.Event()
        self._frames = _audio_frames(self.audio) if self.script is None else []
        if self.network_delay_ms < 0:
            raise ValueError("network_delay_ms must be >= 0")
        if self.network_delay_ms and self.speed is None:
            raise ValueError("a network delay needs a paced call (speed), not as-fast-as-possible")
        self._caller: ScriptedCaller | None = None
        if self.script is not None:
            self._caller = ScriptedCaller(self.script)
        self._bot_playing = False
        self._words: dict[str, list[str]] = {}  # bot turn -> words whose marks played, in order
        self._inbound: asyncio.Queue[tuple[float, str | bytes]] | None = None
        self._outbound: asyncio.Queue[tuple[float, Callable[[], Awaitable[Any]]]] | None = None
        self._ended = asyncio.Event()
        self._client: StreamClient | None = None
        self._dtmf = sorted(self.dtmf)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._received = bytearray()
        # playback model, in call-time ms
        self._buffer: PlaybackBuffer[_PendingMark] = PlaybackBuffer()
        self._marks: list[dict[str, Any]] = []
        self._first_media_t: int | None = None
        self._hangup_t: int | None = None
        self._error: str | None = None
        self._info: dict[str, Any] = {
            "webhook_url": None,
            "webhook_status": None,
            "stream_url": None,
            "custom_parameters": None,
            "server_close_code": None,
            "server_close_reason": None,
            "stop_sent": False,
            "updates": [],
        }

    # ---- clock and events

    @property
    def t_ms(self) -> int:
        """Call time: audio time of the frames sent so far."""
        return self.frames_sent * FRAME_MS

    @property
    def ended(self) -> bool:
        """True once the call has ended (hangup, update, server close, audio end or rejection)."""
        return self._ended.is_set()

    def _emit(self, event: str, **fields: Any) -> dict[str, Any]:
        ev = {"event": event, "t_ms": self.t_ms, **fields}
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)
        return ev

    def _finish(self, reason: str) -> None:
        if not self._ended.is_set():
            self.ended_by = reason
            self._ended.set()

    def _reject(self, message: str) -> None:
        self._error = self._error or message
        self._emit("error", message=message)
        self._finish("rejected")

    # ---- control (REST stand-in, tests)

    def hangup(self, by: str = "rest") -> bool:
        """End the call now (recorded at the current call time); False if it had already ended."""
        if self.ended:
            return False
        self._hangup_t = self.t_ms
        self._emit("hangup", by=by, unplayed_ms=round(self._buffer.unplayed_ms(self.t_ms)))
        self._finish("hangup")
        return True

    def redirect(self, *, twiml: str | None = None, url: str | None = None) -> bool:
        """A REST update with new TwiML/Url: Twilio stops the stream and runs it (e.g. <Dial> a human)."""
        if self.ended:
            return False
        self._info["updates"].append({"t_ms": self.t_ms, "twiml": twiml, "url": url})
        self._emit("update", twiml=twiml, url=url, unplayed_ms=round(self._buffer.unplayed_ms(self.t_ms)))
        self._finish("update")
        return True

    async def send_dtmf(self, digit: str) -> None:
        """Press a key now (needs the stream to be started)."""
        if self._client is None or not self.started.is_set():
            raise RuntimeError("stream not started yet")
        await self._client.send_dtmf(digit)
        self._counters["dtmf_sent"] += 1

    # ---- playback model

    def _on_media(self, payload: bytes) -> None:
        now = self.t_ms
        if self._buffer.add_audio(now, len(payload) / BYTES_PER_MS):  # idle: playback starts now
            self._emit("media_start")
            if self._first_media_t is None:
                self._first_media_t = now
        if not self._bot_playing:
            self._bot_playing = True
            self._emit("bot_audio_start")

    def _check_bot_audio_end(self) -> None:
        if self._bot_playing and self._buffer.unplayed_ms(self.t_ms) <= 0:
            self._bot_playing = False
            self.events.append(ev := {"event": "bot_audio_end", "t_ms": round(self._buffer.play_end_ms)})
            if self.on_event is not None:
                self.on_event(ev)

    async def _echo(self, mark: _PendingMark, played: bool) -> None:
        self._marks.append(
            {
                "name": mark.name,
                "played": played,
                "echoed": True,
                "t_ms": self.t_ms,
                "queued_t_ms": mark.queued_t_ms,
            }
        )
        self._emit("mark", name=mark.name, played=played, queued_t_ms=mark.queued_t_ms)
        if played and mark.name.startswith("a:w"):  # an agent word mark: "a:w<turn>.<clause>.<i>:<word>"
            self._words.setdefault(_mark_turn(mark.name), []).append(mark.name.rsplit(":", 1)[1])
        client = self._client
        if client is not None and client.is_open:
            await self._send(lambda: client.send_mark(mark.name))

    async def _on_mark(self, name: str) -> None:
        self._buffer.add_mark(self.t_ms, _PendingMark(name, self.t_ms))
        await self._flush_due_marks()  # nothing buffered: echoed at once

    async def _flush_due_marks(self) -> None:
        while not self.ended and (mark := self._buffer.pop_due(self.t_ms)) is not None:
            await self._echo(mark, played=True)

    async def _on_clear(self) -> None:
        dropped, cancelled = self._buffer.clear(float(self.t_ms))
        words = [m.name for m in cancelled if m.name.startswith("a:w")]
        turn = _mark_turn(words[0]) if words else max(self._words, key=_turn_key, default=None)
        played = self._words.get(turn, []) if turn is not None else []
        # played_words: the words of the cleared bot turn whose marks played before the clear (the
        # server names each word mark after its word, so this is what the caller really heard)
        self._emit(
            "clear",
            dropped_ms=round(dropped),
            cancelled_marks=[m.name for m in cancelled],
            turn=turn,
            played_words=list(played),
            played_text=" ".join(played),
        )
        self._check_bot_audio_end()
        for mark in cancelled:
            await self._echo(mark, played=False)

    # ---- the socket

    async def _handle(self, raw: str | bytes) -> None:
        c = self._counters
        if isinstance(raw, bytes):
            c["binary_messages"] += 1  # Twilio: error 31950
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            c["bad_json"] += 1
            return
        if not isinstance(msg, dict):
            c["bad_json"] += 1
            return
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            c["unknown_events"] += 1  # Twilio: error 31924
            return
        if msg.get("streamSid") != self.stream_sid:
            c["wrong_stream_sid"] += 1  # Twilio ignores it: the audio/mark goes nowhere
            return
        if self.ended:
            return
        if event == "media":
            media = msg.get("media")
            try:
                payload = base64.b64decode(media["payload"], validate=True)  # type: ignore[index]
            except (TypeError, KeyError, binascii.Error, ValueError):
                c["malformed_messages"] += 1
                return
            c["media_chunks_received"] += 1
            c["media_bytes_received"] += len(payload)
            if len(payload) % FRAME_BYTES:
                c["odd_sized_media"] += 1
            if payload:
                self._received += payload
                self._on_media(payload)
        elif event == "mark":
            name = (msg.get("mark") or {}).get("name") if isinstance(msg.get("mark"), dict) else None
            if not isinstance(name, str):
                c["malformed_messages"] += 1
                return
            c["marks_received"] += 1
            await self._on_mark(name)
        else:
            c["clears_received"] += 1
            await self._on_clear()

    async def _send(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Send now, or after the network delay (in order) when there is one."""
        if self._outbound is None:
            with contextlib.suppress(ConnectionClosed):
                await fn()
        else:
            self._outbound.put_nowait((asyncio.get_running_loop().time() + self._delay_s, fn))

    @property
    def _delay_s(self) -> float:
        return self.network_delay_ms / 1000 / (self.speed or 1.0)

    async def _delayed(self, queue: asyncio.Queue, deliver: Callable[[Any], Awaitable[Any]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, item = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            with contextlib.suppress(ConnectionClosed):
                await deliver(item)

    async def _receive(self, client: StreamClient) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in client.ws:
                if self._inbound is None:
                    await self._handle(raw)
                else:
                    self._inbound.put_nowait((loop.time() + self._delay_s, raw))
        except ConnectionClosed:
            pass
        if self._inbound is not None:  # what is still on the wire arrives before the close is seen
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(self._inbound), timeout=self._delay_s + 1.0)
        if not self.ended:
            code, reason = client.close_code, client.close_reason
            self._info["server_close_code"], self._info["server_close_reason"] = code, reason
            self._emit("server_closed", code=code, reason=reason or "")
            self._finish("server_closed")

    @staticmethod
    async def _drain(queue: asyncio.Queue) -> None:
        while not queue.empty():
            await asyncio.sleep(0.005)

    def _next_frame(self, k: int, total: int) -> bytes | None:
        """Frame k of the call (None: the call's audio is over)."""
        if self._caller is None:
            if k >= total:
                return None
            return self._frames[k] if k < len(self._frames) else SILENCE_FRAME
        playing = self._buffer.unplayed_ms(self.t_ms) > 0
        pcm, line = self._caller.next_frame(float(self.t_ms), playing)
        if line is not None:
            self.events.append(line)
            if self.on_event is not None:
                self.on_event(line)
        if self._caller.hung_up:
            return None
        if self._caller.done and self._caller.idle_for(self.t_ms, playing) >= self.script.tail_ms:  # type: ignore[union-attr]
            return None
        if pcm is None:
            return SILENCE_FRAME
        return pcm_to_ulaw(pcm.astype("<i2").tobytes())

    async def _send_frames(self, client: StreamClient) -> None:
        loop = asyncio.get_running_loop()
        total = len(self._frames) + max(0, round(self.tail_secs * 1000 / FRAME_MS))
        period = FRAME_MS / 1000 / self.speed if self.speed else 0.0
        ended = asyncio.ensure_future(self._ended.wait())
        t0 = loop.time()
        try:
            k = 0
            while not self.ended:
                frame = self._next_frame(k, total)
                if frame is None:
                    self._finish("audio_end")
                    break
                if period:
                    delay = t0 + k * period - loop.time()  # frame k is due at t0 + k * period: no drift
                    if delay > 0:
                        await asyncio.wait({ended}, timeout=delay)
                        if self.ended:
                            break
                else:
                    await asyncio.sleep(0)  # let the receiver run between frames
                try:
                    if self._outbound is None:
                        await client.send_media(frame)
                    else:
                        await self._send(lambda f=frame: client.send_media(f))
                except ConnectionClosed:
                    await asyncio.wait({ended}, timeout=2.0)  # the receiver reports the close code
                    break
                k += 1
                self.frames_sent = k
                await self._flush_due_marks()
                self._check_bot_audio_end()
                while self._dtmf and self._dtmf[0][0] <= self.t_ms and not self.ended:
                    with contextlib.suppress(ConnectionClosed):
                        await client.send_dtmf(self._dtmf.pop(0)[1])
                        self._counters["dtmf_sent"] += 1
        finally:
            ended.cancel()

    async def _place(self) -> StreamTwiml | None:
        """Webhook POST -> TwiML -> Stream URL; None (and rejected) if that fails."""
        try:
            url = webhook_url(self.url, self.params)
        except RejectedCall as e:
            self._reject(str(e))
            return None
        self._info["webhook_url"] = url
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "in-progress",
            "Called": self.to_number,
            "Caller": self.from_number,
            "Direction": "outbound-api",
            "From": self.from_number,
            "To": self.to_number,
            **dict(self.extra_form or {}),
        }
        headers = {"User-Agent": WEBHOOK_USER_AGENT, "Accept": "*/*"}
        if self.auth_token:
            headers["X-Twilio-Signature"] = RequestValidator(self.auth_token).compute_signature(url, form)
        try:
            async with httpx.AsyncClient(timeout=self.http_timeout, trust_env=False) as http:
                resp = await http.post(url, data=form, headers=headers)
        except httpx.ConnectError as e:
            self._reject(f"cannot reach the server at {url} ({e or 'connection refused'})")
            return None
        except httpx.TimeoutException:
            self._reject(f"webhook {url} timed out after {self.http_timeout:g} s")
            return None
        except httpx.HTTPError as e:
            self._reject(f"webhook {url} failed: {e}")
            return None
        self._info["webhook_status"] = resp.status_code
        if resp.status_code != 200:
            body = " ".join(resp.text.split())[:200]
            self._reject(f"webhook {url} returned HTTP {resp.status_code}" + (f": {body}" if body else ""))
            return None
        try:
            twiml = parse_twiml(resp.content)
        except RejectedCall as e:
            self._info["twiml"] = resp.text
            self._reject(str(e))
            return None
        self._info["stream_url"] = twiml.url
        self._info["custom_parameters"] = twiml.parameters
        return twiml

    async def _open_stream(self, twiml: StreamTwiml) -> StreamClient | None:
        try:
            return await StreamClient.connect(
                twiml.url,
                auth_token=self.auth_token,
                call_sid=self.call_sid,
                account_sid=self.account_sid,
                stream_sid=self.stream_sid,
                open_timeout=self.http_timeout,
            )
        except InvalidStatus as e:
            self._reject(f"WebSocket {twiml.url} rejected: HTTP {e.response.status_code}")
        except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as e:
            self._reject(f"cannot open WebSocket {twiml.url}: {e or type(e).__name__}")
        return None

    async def run(self) -> CallReport:
        """Place the call and stream until it ends; never raises for server-side failures."""
        if self.rest is not None:
            self.rest.attach(self)
        receiver: asyncio.Task[None] | None = None
        links: list[asyncio.Task[None]] = []
        try:
            twiml = await self._place()
            if twiml is None or self.ended:
                return self._report()
            client = await self._open_stream(twiml)
            if client is None:
                return self._report()
            self._client = client
            try:
                await client.send_connected()
                await client.send_start(twiml.parameters)
            except ConnectionClosed:
                pass
            self.started.set()
            if self.network_delay_ms:
                self._inbound, self._outbound = asyncio.Queue(), asyncio.Queue()
                links = [
                    asyncio.create_task(self._delayed(self._inbound, self._handle)),
                    asyncio.create_task(self._delayed(self._outbound, lambda fn: fn())),
                ]
            receiver = asyncio.create_task(self._receive(client))
            await self._send_frames(client)
            if self._outbound is not None:  # what the phone said is still on the wire
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drain(self._outbound), timeout=self._delay_s + 1.0)
            if self.ended_by in ("hangup", "update", "audio_end") and client.is_open:
                with contextlib.suppress(ConnectionClosed):
                    await client.send_stop()
                    self._info["stop_sent"] = True
                    await client.close(1000)
            if not self.ended:  # the socket broke without the receiver noticing
                self._finish("server_closed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), timeout=3.0)
            return self._report()
        finally:
            if receiver is not None and not receiver.done():
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
            for link in links:
                link.cancel()
            if self._client is not None and self._client.is_open:
                await self._client.close(1000)
            self._finish(self.ended_by or "audio_end")
            if self.rest is not None:
                self.rest.detach(self)

    def _report(self) -> CallReport:
        now = self.t_ms
        unplayed = self._buffer.unplayed_ms(now)
        marks = self._marks + [
            {"name": m.name, "played": False, "echoed": False, "t_ms": None, "queued_t_ms": m.queued_t_ms}
            for _, m in self._buffer.pending
        ]
        summary: dict[str, Any] = {
            "event": "summary",
            "t_ms": now,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "account_sid": self.account_sid,
            "ended_by": self.ended_by,
            "error": self._error,
            "hangup_t_ms": self._hangup_t,
            "first_media_t_ms": self._first_media_t,
            "playback_end_t_ms": round(self._buffer.play_end_ms) if self._first_media_t is not None else None,
            "playback_starts": len([e for e in self.events if e["event"] == "media_start"]),
            "played_ms": round(self._buffer.queued_ms - self._buffer.cleared_ms - unplayed),
            "received_ms": round(self._buffer.queued_ms),
            "cleared_ms": round(self._buffer.cleared_ms),
            "unplayed_ms": round(unplayed),
            "marks": marks,
            "frames_sent": self.frames_sent,
            "audio_frames": len(self._frames),
            "duration_ms": now,
            "network_delay_ms": self.network_delay_ms,
            **({"caller_lines": self._caller.lines} if self._caller is not None else {}),
            **self._info,
            **self._counters,
        }
        return CallReport(events=list(self.events), summary=summary, received_ulaw=bytes(self._received))


def _mark_turn(name: str) -> str:
    """The bot turn of an agent mark name ("a:w3.1.4:word" -> "3")."""
    return name[3:].split(".", 1)[0]


def _turn_key(turn: str) -> int:
    return int(turn) if turn.isdigit() else -1


async def simulate_call(
    audio: np.ndarray | Path | str,
    url: str,
    *,
    speed: float | None = 1.0,
    auth_token: str | None = None,
    account_sid: str | None = None,
    params: Mapping[str, str] | None = None,
    rest: RestStandIn | None = None,
    tail_secs: float = 20.0,
    on_event: EventSink | None = None,
    call_sid: str | None = None,
    from_number: str = DEFAULT_FROM,
    to_number: str = DEFAULT_TO,
    dtmf: Sequence[tuple[int, str]] = (),
    extra_form: Mapping[str, str] | None = None,
    script: Script | None = None,
    network_delay_ms: float = 0.0,
) -> CallReport:
    """Place one simulated call against the server at `url` and return what happened.

    `rest`: the REST stand-in the server hangs up/updates through (the call is registered there by
    CallSid). `dtmf`: (call time ms, digit) keypresses. `extra_form`: more webhook params (e.g. AnsweredBy).
    """
    call = PhoneCall(
        audio,
        url,
        speed=speed,
        auth_token=auth_token,
        account_sid=account_sid,
        params=params,
        rest=rest,
        tail_secs=tail_secs,
        on_event=on_event,
        call_sid=call_sid,
        from_number=from_number,
        to_number=to_number,
        dtmf=dtmf,
        extra_form=extra_form,
        script=script,
        network_delay_ms=network_delay_ms,
    )
    return await call.run()


async def call_agent(
    base_url: str,
    script: Script,
    *,
    agent: str,
    rest: RestStandIn | None = None,
    auth_token: str | None = None,
    account_sid: str | None = None,
    network_delay_ms: float = 0.0,
    amd: str = "off",
    **params: str,
) -> CallReport:
    """Place one scripted caller into the `agent` workflow of the server at `base_url` (its /twiml
    webhook; `amd="off"`: an inbound call, the conversation starts at once) and return the CallReport.
    `params`: more webhook parameters (e.g. message="short.wav")."""
    return await simulate_call(
        np.zeros(0, np.int16),
        f"{base_url}/twiml",
        auth_token=auth_token,
        account_sid=account_sid,
        params={"workflow": "agent", "agent": agent, "amd": amd, **params},
        rest=rest,
        script=script,
        network_delay_ms=network_delay_ms,
    )
