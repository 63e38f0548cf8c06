"""A Cartesia stand-in: the TTS WebSocket (`/tts/websocket`) that Pipecat's CartesiaTTSService talks to.

Protocol (as pipecat/services/cartesia/tts.py uses it): headers `X-API-Key` and `Cartesia-Version`;
the client sends JSON `{"transcript", "continue", "context_id", "model_id", "voice", "output_format":
{"container": "raw", "encoding": "pcm_s16le", "sample_rate"}, "add_timestamps": true, ...}` (an empty
transcript with `continue: false` flushes the context) and `{"context_id", "cancel": true}` on barge-in.
The server answers, per context, `chunk` messages (base64 PCM in `data`), `timestamps` messages
(`word_timestamps: {words, start, end}`, seconds from the start of the context) and a final `done`.

The voice: by default a synthetic "voice" whose word timings are exact by construction (each word is a
voiced harmonic burst of a length set by its letters, with gaps between words and longer pauses at
punctuation), so a test knows exactly which words were in the audio it played. `voice="flite"` uses the
offline flite voice instead (intelligible, with estimated word times).

Latency: `first_audio_ms` from a transcript to its first audio byte; audio is then streamed in
`chunk_ms` pieces `realtime_factor` times faster than real time. Faults per connection: "429"/"500"
reject the handshake, "close" drops the socket (code 1011) after `close_after_chunks` chunks, "hang"
accepts text and never answers, "error" answers each transcript with an `error` message;
`refuse=True` means nothing listens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from callgate import synth
from callgate.audio import SAMPLE_RATE, resample, to_int16
from simulator.vendors.base import HANDSHAKE_FAULTS, FaultPlan, ThreadedWebSocketServer

FAULTS = ("429", "500", "close", "hang", "error")
WORD_GAP_SECS = 0.06
PUNCT_PAUSE_SECS = 0.25


def synthetic_speech(text: str, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Deterministic 'speech' for `text`: float audio at `rate` and (word, start, end) of every word."""
    parts: list[np.ndarray] = []
    words: list[tuple[str, float, float]] = []
    t = 0.0
    for i, w in enumerate(text.split()):
        letters = max(1, len(re.sub(r"[^A-Za-z0-9]", "", w)))
        secs = 0.12 + 0.05 * letters
        f0 = 110.0 + 15.0 * (i % 5)
        burst = synth.harmonic_vowel(f0, secs, amp=0.35, formants=(600.0 + 40 * (i % 7), 1300.0, 2500.0))
        gap = WORD_GAP_SECS + (PUNCT_PAUSE_SECS if w[-1] in ".,;:!?" else 0.0)
        parts += [burst, synth.silence(gap)]
        words.append((w, t, t + secs))
        t += secs + gap
    x = synth.concat(*parts)
    if rate != SAMPLE_RATE:
        x = resample(x, SAMPLE_RATE, rate)
    return x, words


class CartesiaStandIn(ThreadedWebSocketServer):
    """`start()` it, then give CartesiaTTSService `url=stand_in.url` and any api_key."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voice: str = "synthetic",
        first_audio_ms: float = 0.0,
        chunk_ms: float = 40.0,
        realtime_factor: float = 4.0,
        faults: list[str | None] | None = None,
        default_fault: str | None = None,
        close_after_chunks: int = 3,
        refuse: bool = False,
    ) -> None:
        super().__init__(refuse=refuse)
        if voice not in ("synthetic", "flite"):
            raise ValueError("voice must be 'synthetic' or 'flite'")
        self.api_key = api_key
        self.voice = voice
        self.first_audio_ms = first_audio_ms
        self.chunk_ms = chunk_ms
        self.realtime_factor = realtime_factor
        self.plan = FaultPlan(faults, default_fault, FAULTS)
        self.close_after_chunks = close_after_chunks
        self.requests: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.spoken: dict[str, list[tuple[str, float, float]]] = {}  # context_id -> words sent

    @property
    def url(self) -> str:
        """For CartesiaTTSService(url=...) / CARTESIA_URL."""
        return f"ws://127.0.0.1:{self.port}/tts/websocket"

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        if not request.path.startswith("/tts/websocket"):
            return HTTPStatus.NOT_FOUND, "no such endpoint"
        key = request.headers.get("X-API-Key")
        if not key or (self.api_key is not None and key != self.api_key):
            return HTTPStatus.UNAUTHORIZED, "invalid api key"
        if not request.headers.get("Cartesia-Version"):
            return HTTPStatus.BAD_REQUEST, "Cartesia-Version header required"
        fault = self.plan.next()
        if fault in HANDSHAKE_FAULTS:
            return HANDSHAKE_FAULTS[fault], f"stand-in {fault}"
        self._pending_fault = fault
        return None

    def _speak(self, text: str, rate: int) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
        if self.voice == "flite":
            from pipelines.services.offline_tts import LocalVoice

            s = LocalVoice().synthesize(text)
            pcm = np.frombuffer(s.pcm, dtype=np.int16).astype(np.float32) / 32768
            starts = [t for _, t in s.words] + [s.duration_secs]
            words = [(w, t, starts[i + 1]) for i, (w, t) in enumerate(s.words)]
            return (resample(pcm, SAMPLE_RATE, rate) if rate != SAMPLE_RATE else pcm), words
        return synthetic_speech(text, rate)

    async def handler(self, ws: ServerConnection) -> None:
        fault = self.fault_of(ws)
        work: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        cancelled: set[str] = set()
        offsets: dict[str, float] = {}
        chunks_sent = 0

        async def send(msg: dict[str, Any]) -> None:
            await ws.send(json.dumps(msg))

        async def worker() -> None:
            nonlocal chunks_sent
            loop = asyncio.get_running_loop()
            while (msg := await work.get()) is not None:
                cid = str(msg.get("context_id", ""))
                if cid in cancelled:
                    continue
                text = str(msg.get("transcript", ""))
                fmt = msg.get("output_format") or {}
                rate = int(fmt.get("sample_rate") or SAMPLE_RATE)
                if fault == "error" and text.strip():
                    await send({"type": "error", "context_id": cid, "status_code": 500, "done": True,
                                "error": "stand-in synthesis error"})
                    continue
                if text.strip():
                    x, words = await loop.run_in_executor(None, self._speak, text.strip(), rate)
                    pcm = to_int16(x).tobytes()
                    if self.first_audio_ms > 0:
                        await asyncio.sleep(self.first_audio_ms / 1000)
                    off = offsets.get(cid, 0.0)
                    step = int(rate * self.chunk_ms / 1000) * 2
                    for i in range(0, len(pcm), step):
                        if cid in cancelled:
                            break
                        await send({"type": "chunk", "data": base64.b64encode(pcm[i : i + step]).decode(),
                                    "done": False, "status_code": 206, "step_time": self.chunk_ms,
                                    "context_id": cid})
                        chunks_sent += 1
                        if fault == "close" and chunks_sent >= self.close_after_chunks:
                            ws.close_timeout = 0.2  # a drop, not a polite close: do not wait for the client
                            await ws.close(code=1011, reason="stand-in dropped the stream")
                            return
                        if i == 0 and msg.get("add_timestamps"):
                            shifted = [(w, off + s, off + e) for w, s, e in words]
                            self.spoken.setdefault(cid, []).extend(shifted)
                            await send({"type": "timestamps", "context_id": cid, "status_code": 206, "done": False,
                                        "word_timestamps": {"words": [w for w, _, _ in shifted],
                                                            "start": [round(s, 3) for _, s, _ in shifted],
                                                            "end": [round(e, 3) for _, _, e in shifted]}})
                        await asyncio.sleep(self.chunk_ms / 1000 / self.realtime_factor)
                    offsets[cid] = off + len(pcm) / 2 / rate
                if not msg.get("continue", True) and cid not in cancelled:
                    await send({"type": "done", "context_id": cid, "status_code": 206, "done": True})

        task = asyncio.create_task(worker())
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    msg = json.loads(raw)
                except json.JSONDecodeError:
                    await send({"type": "error", "status_code": 400, "done": True, "error": "invalid JSON"})
                    continue
                self.requests.append(msg)
                if msg.get("cancel"):
                    cancelled.add(str(msg.get("context_id", "")))
                    self.cancels.append(str(msg.get("context_id", "")))
                    continue
                if fault == "hang":
                    continue
                work.put_nowait(msg)
        except ConnectionClosed:
            pass
        finally:
            work.put_nowait(None)
            try:
                await asyncio.wait_for(task, timeout=2)
            except (TimeoutError, ConnectionClosed, asyncio.CancelledError):
                task.cancel()
