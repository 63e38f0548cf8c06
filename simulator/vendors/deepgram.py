"""A Deepgram stand-in: the v1 listen WebSocket (`/v1/listen`) that Pipecat's DeepgramSTTService talks to.

Protocol (as deepgram-sdk 7 and pipecat/services/deepgram/stt.py use it): the client connects with the
options as query parameters (encoding=linear16, sample_rate=8000, interim_results=true, ...) and an
`Authorization: Token KEY` header, streams binary PCM, and sends JSON `KeepAlive`, `Finalize` (after the
VAD says the caller stopped) and `CloseStream`. The server answers `Results` messages
(`channel.alternatives[0].transcript`, `words`, `start`, `duration`, `is_final`, `speech_final`,
`from_finalize`) and, on CloseStream, a `Metadata` message before closing.

What it "recognizes": the stand-in finds the caller's utterances in the audio by energy (20 ms frames,
an utterance ends after `endpoint_ms` of quiet or on Finalize) and, for each utterance, takes the next
text from `transcripts` (the simulator tells it what the caller says). When that queue is empty it runs
pocketsphinx on the utterance (set `transcriber=None` to get empty transcripts instead). Interim results
reveal the text word by word every `interim_every_ms` of speech, all but its last word; with
`interim_tail_ms` set, each pause of that long in an utterance brings an interim that catches up with the
words said so far (a real STT's interims catch up with the audio once the speaker stops): the stand-in
takes the k-th pause to end the text's k-th phrase (its words up to the k-th , ; : . ? or !), so the
pause after a line's last word brings all of them and a pause at its comma only the words before it
(a pause between words shorter than `interim_tail_ms` is no pause: keep it above the voice's gaps
between words, ~150 ms for espeak). Without it the last word comes only with the final.

A Finalize ends the utterance. In its k-th such pause (with `interim_tail_ms`), the final holds the words
of the first k phrases (what was said so far), and speech that resumes before `endpoint_ms` of quiet
says the rest of the line (if none resumes, the rest comes in a final `endpoint_ms` later). Otherwise the
final holds all its words, and speech resuming that soon is the rest of the line, whose words were sent:
its own final is empty.

A scripted entry may be a pair (interim words, final words): the interims guess one text and the final
says another, as an STT revising its guess does. `interim_punctuation=False` sends the interims
lower-case without punctuation (the final keeps it).

Latency: `first_result_ms` before the first interim of an utterance, `final_ms` between the end of the
utterance (or Finalize) and its final result. Faults per connection (see base.FaultPlan): "429"/"500"
reject the handshake, "close" drops the connection abnormally after `close_after_secs` of audio, "hang"
accepts the stream and never answers; `refuse=True` means nothing listens at all.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from simulator.vendors.base import HANDSHAKE_FAULTS, FaultPlan, ThreadedWebSocketServer

FAULTS = ("429", "500", "close", "hang")
Transcriber = Callable[[bytes, int], str]


def pocketsphinx_transcriber() -> Transcriber:
    """Transcribe with the offline recognizer, in its worker processes (pocketsphinx holds the GIL while
    it decodes: in a thread here it would stall a server running in the same process)."""
    from pipelines.services.sphinx import shared_pool

    return shared_pool().transcribe_blocking


def _phrases_end(text: str, k: int) -> int:
    """How many words the first `k` phrases of `text` hold (a phrase ends on , ; : . ? or !)."""
    words = text.split()
    ends = [i + 1 for i, w in enumerate(words) if w[-1] in ",;:.?!"]
    if not ends or ends[-1] != len(words):
        ends.append(len(words))
    return ends[min(k, len(ends)) - 1]


class _Utterance:
    def __init__(self, start_secs: float, text: str | tuple[str, str] | None) -> None:
        self.start_secs = start_secs
        self.interim_text, self.text = text if isinstance(text, tuple) else (text, text)
        self.pauses = 0  # pauses of interim_tail_ms so far (each one an interim up to the next phrase's end)
        self.in_pause = False
        self.pcm = bytearray()
        self.speech_secs = 0.0
        self.last_speech_secs = start_secs
        self.interims_sent = 0
        self.first_interim_due: float | None = None

    def split_at_pause(self) -> tuple[str, str] | None:
        """A Finalize in the k-th pause: keep the first k phrases, return the rest (interim, final) words."""
        if not (self.in_pause and self.text and self.interim_text):
            return None
        head_i, head_f = _phrases_end(self.interim_text, self.pauses), _phrases_end(self.text, self.pauses)
        wi, wf = self.interim_text.split(), self.text.split()
        if head_i >= len(wi) or head_f >= len(wf):
            return None
        self.interim_text, self.text = " ".join(wi[:head_i]), " ".join(wf[:head_f])
        return " ".join(wi[head_i:]), " ".join(wf[head_f:])


class DeepgramStandIn(ThreadedWebSocketServer):
    """`start()` it, then give DeepgramSTTService `base_url=stand_in.base_url` and any api_key."""

    def __init__(
        self,
        *,
        transcripts: list[str | tuple[str, str]] | None = None,
        transcriber: Transcriber | None | str = "pocketsphinx",
        api_key: str | None = None,
        first_result_ms: float = 0.0,
        final_ms: float = 0.0,
        interim_every_ms: float = 300.0,
        interim_tail_ms: float | None = None,
        interim_punctuation: bool = True,
        endpoint_ms: float = 500.0,
        speech_dbfs: float = -40.0,
        faults: list[str | None] | None = None,
        default_fault: str | None = None,
        close_after_secs: float = 1.0,
        refuse: bool = False,
    ) -> None:
        super().__init__(refuse=refuse)
        self.transcripts: deque[str | tuple[str, str]] = deque(transcripts or [])
        self._transcriber_spec = transcriber
        self._transcriber: Transcriber | None = None
        self.api_key = api_key
        self.first_result_ms = first_result_ms
        self.final_ms = final_ms
        self.interim_every_ms = interim_every_ms
        self.interim_tail_ms = interim_tail_ms
        self.interim_punctuation = interim_punctuation
        self.endpoint_ms = endpoint_ms
        self.threshold = 32768 * 10 ** (speech_dbfs / 20)
        self.plan = FaultPlan(faults, default_fault, FAULTS)
        self.close_after_secs = close_after_secs
        self.queries: list[dict[str, str]] = []
        self.control_messages: list[str] = []
        self.results: list[dict[str, Any]] = []
        self.audio_bytes = 0
        self.sessions: list[dict[str, Any]] = []  # per accepted connection: its fault, audio, and finals sent

    @property
    def base_url(self) -> str:
        """For DeepgramSTTService(base_url=...) / DEEPGRAM_BASE_URL (ws:// keeps it insecure)."""
        return f"ws://127.0.0.1:{self.port}"

    def say(self, *texts: str | tuple[str, str]) -> None:
        """Queue what the caller's next utterances say (thread-safe enough: deque appends are atomic); a pair
        is (what the interims guess, what the final says)."""
        self.transcripts.extend(texts)

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        if not request.path.startswith("/v1/listen"):
            return HTTPStatus.NOT_FOUND, "no such endpoint"
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Token ") or (self.api_key is not None and auth != f"Token {self.api_key}"):
            return HTTPStatus.UNAUTHORIZED, "invalid credentials"
        fault = self.plan.next()
        if fault in HANDSHAKE_FAULTS:
            return HANDSHAKE_FAULTS[fault], f"stand-in {fault}"
        self._pending_fault = fault
        return None

    def _text_for(self, pcm: bytes, rate: int) -> str:
        if self.transcripts:
            text = self.transcripts.popleft()
            return text[1] if isinstance(text, tuple) else text
        if self._transcriber_spec is None:
            return ""
        if self._transcriber is None:
            spec = self._transcriber_spec
            self._transcriber = pocketsphinx_transcriber() if spec == "pocketsphinx" else spec  # type: ignore[assignment]
        return self._transcriber(pcm, rate)  # type: ignore[misc]

    async def handler(self, ws: ServerConnection) -> None:
        fault = self.fault_of(ws)
        query = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        self.queries.append(query)
        rate = int(query.get("sample_rate", "16000"))
        interim = query.get("interim_results", "false") == "true"
        request_id = str(uuid.uuid4())
        session: dict[str, Any] = {"n": len(self.sessions) + 1, "fault": fault, "audio_secs": 0.0, "finals": [],
                                   "closed_by": None}
        self.sessions.append(session)
        audio_secs = 0.0
        utt: _Utterance | None = None
        finalized_at: float | None = None  # last speech of an utterance a Finalize ended (its line may go on)
        carry: tuple[str, str] | None = None  # the rest of the line that Finalize split there
        frame_bytes = rate // 50 * 2

        def results(u: _Utterance, text: str, *, final: bool, from_finalize: bool = False) -> dict[str, Any]:
            if not final and not self.interim_punctuation:
                text = " ".join(w.lower().strip(".,!?;:") for w in text.split())
            words = text.split()
            dur = max(u.last_speech_secs - u.start_secs, 0.02)
            step = dur / max(len(words), 1)
            return {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(dur, 3),
                "start": round(u.start_secs, 3),
                "is_final": final,
                "speech_final": final and not from_finalize,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": text,
                            "confidence": 0.98,
                            "words": [
                                {
                                    "word": w.lower().strip(".,!?"),
                                    "start": round(u.start_secs + i * step, 3),
                                    "end": round(u.start_secs + (i + 1) * step, 3),
                                    "confidence": 0.98,
                                    "punctuated_word": w,
                                }
                                for i, w in enumerate(words)
                            ],
                        }
                    ]
                },
                "metadata": {
                    "request_id": request_id,
                    "model_info": {"name": "stand-in", "version": "1", "arch": "stand-in"},
                    "model_uuid": "00000000-0000-0000-0000-000000000000",
                },
            }

        outbox: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()

        async def sender() -> None:
            """Sends in order, each message no earlier than its due time (latency never reorders)."""
            while (item := await outbox.get()) is not None:
                due, msg = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    await ws.send(json.dumps(msg))
                    self.results.append(msg)
                    if msg.get("is_final"):
                        session["finals"].append(msg["channel"]["alternatives"][0]["transcript"])
                except ConnectionClosed:
                    return

        def schedule(msg: dict[str, Any], delay_ms: float) -> None:
            outbox.put_nowait((time.monotonic() + delay_ms / 1000, msg))

        sender_task = asyncio.create_task(sender())
        sends = {sender_task}

        async def finish(u: _Utterance, from_finalize: bool) -> None:
            if u.text is None:
                u.text = await asyncio.get_running_loop().run_in_executor(None, self._text_for, bytes(u.pcm), rate)
            schedule(results(u, u.text, final=True, from_finalize=from_finalize), self.final_ms)

        try:
            async for message in ws:
                if fault == "hang":
                    continue
                if isinstance(message, bytes):
                    self.audio_bytes += len(message)
                    x = np.frombuffer(message[: len(message) // 2 * 2], dtype=np.int16)
                    for i in range(0, len(x), frame_bytes // 2):
                        f = x[i : i + frame_bytes // 2]
                        secs = len(f) / rate
                        loud = len(f) and float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) >= self.threshold
                        if loud:
                            if utt is None:
                                rest = finalized_at is not None and audio_secs - finalized_at < self.endpoint_ms / 1000
                                text = (carry or "") if rest else self.transcripts.popleft() if self.transcripts else None
                                utt, finalized_at, carry = _Utterance(audio_secs, text), None, None
                            utt.speech_secs += secs
                            utt.last_speech_secs = audio_secs + secs
                        if utt is not None:
                            utt.pcm += f.tobytes()
                        audio_secs += secs
                        if carry and finalized_at is not None and audio_secs - finalized_at >= self.endpoint_ms / 1000:
                            rest_utt, carry = _Utterance(finalized_at, carry), None  # the line never went on
                            await finish(rest_utt, from_finalize=False)
                        quiet = audio_secs - utt.last_speech_secs if utt is not None else 0.0
                        if utt is not None and quiet >= self.endpoint_ms / 1000:
                            done, utt = utt, None
                            await finish(done, from_finalize=False)
                        elif utt is not None and interim and utt.interim_text:
                            n_words = len(utt.interim_text.split())
                            due = int(utt.speech_secs * 1000 // self.interim_every_ms)
                            tail = self.interim_tail_ms is not None and quiet >= self.interim_tail_ms / 1000
                            utt.in_pause = utt.in_pause and not loud
                            if tail and not loud and not utt.in_pause:
                                utt.in_pause, utt.pauses = True, utt.pauses + 1
                                # the STT has heard past these words (and says so again if it had)
                                utt.interims_sent = max(utt.interims_sent, _phrases_end(utt.interim_text, utt.pauses))
                                partial = " ".join(utt.interim_text.split()[: utt.interims_sent])
                                schedule(results(utt, partial, final=False), 0.0)
                            elif due > utt.interims_sent and utt.interims_sent < n_words - 1:
                                utt.interims_sent += 1
                                partial = " ".join(utt.interim_text.split()[: utt.interims_sent])
                                delay = self.first_result_ms if utt.interims_sent == 1 else 0.0
                                schedule(results(utt, partial, final=False), delay)
                    session["audio_secs"] = round(audio_secs, 2)
                    if fault == "close" and audio_secs >= self.close_after_secs:
                        ws.close_timeout = 0.2  # a drop, not a polite close: do not wait for the client
                        await ws.close(code=1011, reason="stand-in dropped the stream")
                        return
                    continue
                try:
                    msg = json.loads(message)
                except json.JSONDecodeError:
                    continue
                kind = msg.get("type", "")
                self.control_messages.append(kind)
                if kind == "Finalize":
                    if utt is not None:
                        done, utt = utt, None
                        finalized_at, carry = done.last_speech_secs, done.split_at_pause()
                        await finish(done, from_finalize=True)
                    else:
                        empty = _Utterance(audio_secs, "")
                        schedule(results(empty, "", final=True, from_finalize=True), self.final_ms)
                elif kind == "CloseStream":
                    session["closed_by"] = "CloseStream"
                    if utt is not None:
                        done, utt = utt, None
                        await finish(done, from_finalize=False)
                    outbox.put_nowait(None)
                    await asyncio.wait({sender_task}, timeout=5)
                    meta = {
                        "type": "Metadata", "transaction_key": "deprecated", "request_id": request_id,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                        "duration": round(audio_secs, 3), "channels": 1,
                    }
                    await ws.send(json.dumps(meta))
                    await ws.close()
                    return
        except ConnectionClosed:
            session["closed_by"] = session["closed_by"] or "client"
        finally:
            for t in list(sends):
                t.cancel()
