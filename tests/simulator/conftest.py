"""A tiny Twilio-facing fake server for the simulator tests: real HTTP and WebSocket, scripted behaviour.

`/twiml` answers <Connect><Stream> (checking X-Twilio-Signature when given a token); `/ws/{token}`
records every message with its arrival time and runs the test's script, which can send media,
marks and clears and hang up through the REST stand-in like the real server would.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response, WebSocket
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from simulator.serve import BackgroundServer

Script = Callable[["Session"], Awaitable[None]]
STREAM_TOKEN = "tok123"


def tone(ms: int, freq: float = 440.0) -> np.ndarray:
    """An 8 kHz int16 tone (distinct from µ-law silence, so payloads can be compared)."""
    t = np.arange(ms * 8) / 8000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


class Session:
    """The server side of one stream: what arrived (with loop time) and helpers to answer like Pipecat."""

    def __init__(self, ws: WebSocket, server: FakeServer):
        self.ws = ws
        self.server = server
        self.messages: list[tuple[float, Any]] = []  # (loop time, dict | raw str | bytes)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.start: dict[str, Any] = {}
        self.closed = asyncio.Event()

    @property
    def stream_sid(self) -> str:
        return self.start["streamSid"]

    @property
    def call_sid(self) -> str:
        return self.start["start"]["callSid"]

    @property
    def account_sid(self) -> str:
        return self.start["start"]["accountSid"]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if isinstance(m, dict) and m.get("event") == name]

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                item: Any = msg.get("bytes") if msg.get("text") is None else msg["text"]
                if isinstance(item, str):
                    try:
                        item = json.loads(item)
                    except ValueError:
                        pass
                self.messages.append((loop.time(), item))
                await self._queue.put(item)
        except Exception:  # noqa: BLE001 - a broken socket simply ends the recording
            pass
        finally:
            self.closed.set()
            await self._queue.put(None)

    async def wait_event(
        self, name: str, pred: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The next message of kind `name` (matching `pred`); earlier ones are skipped (still recorded)."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._queue.get()
                if item is None:
                    raise AssertionError(f"socket closed while waiting for {name}")
                if isinstance(item, dict) and item.get("event") == name and (pred is None or pred(item)):
                    return item

    async def send(self, obj: Any) -> None:
        await self.ws.send_text(obj if isinstance(obj, str) else json.dumps(obj))

    async def send_media(self, ms: int, *, byte: int = 0x55) -> None:
        """One media message of `ms` ms (8 bytes per ms of µ-law)."""
        payload = base64.b64encode(bytes([byte]) * (ms * 8)).decode()
        await self.send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})

    async def send_mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})

    async def rest(self, form: dict[str, str], call_sid: str | None = None) -> httpx.Response:
        """POST to the REST stand-in's Calls/{sid}.json, as the server would (Basic auth if configured)."""
        assert self.server.rest_url, "FakeServer(rest_url=...) needed"
        url = f"{self.server.rest_url}/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid or self.call_sid}.json"
        auth = (self.account_sid, self.server.auth_token) if self.server.auth_token else None
        async with httpx.AsyncClient(trust_env=False) as http:
            return await http.post(url, data=form, auth=auth)

    async def hangup(self) -> httpx.Response:
        return await self.rest({"Status": "completed"})


class FakeServer:
    """The contract the simulator is tested against, reduced to the protocol."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        auth_token: str | None = None,
        parameters: dict[str, str] | None = None,
        twiml: str | None = None,
        ws_reject: bool = False,
        rest_url: str | None = None,
    ):
        self.script = script
        self.auth_token = auth_token
        self.parameters = (
            parameters if parameters is not None else {"token": STREAM_TOKEN, "workflow": "test"}
        )
        self.twiml = twiml
        self.ws_reject = ws_reject
        self.rest_url = rest_url
        self.webhooks: list[dict[str, Any]] = []
        self.ws_signature_valid: bool | None = None
        self.sessions: list[Session] = []
        self.script_error: BaseException | None = None
        self.scripts_running = 0
        self.http = BackgroundServer(self._app())

    @property
    def url(self) -> str:
        return self.http.base_url

    @property
    def session(self) -> Session:
        return self.sessions[-1]

    async def scripts_done(self, timeout: float = 5.0) -> None:
        """Wait until no script is still running (it may outlive the call, e.g. a late REST request)."""
        async with asyncio.timeout(timeout):
            while self.scripts_running:
                await asyncio.sleep(0.01)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/twiml")
        async def twiml(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            sig = request.headers.get("x-twilio-signature")
            valid = (
                RequestValidator(self.auth_token).validate(str(request.url), form, sig or "")
                if self.auth_token
                else None
            )
            self.webhooks.append(
                {
                    "url": str(request.url),
                    "query": dict(request.query_params),
                    "form": form,
                    "signature": sig,
                    "valid": valid,
                }
            )
            if valid is False:
                return Response("bad signature", status_code=403)
            if self.twiml is not None:
                return Response(self.twiml, media_type="application/xml")
            vr = VoiceResponse()
            connect = Connect()
            stream = connect.stream(url=f"{self.http.ws_base_url}/ws/{STREAM_TOKEN}")
            for k, v in self.parameters.items():
                stream.parameter(name=k, value=v)
            vr.append(connect)
            return Response(str(vr), media_type="application/xml")

        @app.websocket("/ws/{token}")
        async def ws(websocket: WebSocket, token: str) -> None:
            sig = websocket.headers.get("x-twilio-signature")
            if self.auth_token:
                url = f"{self.http.ws_base_url}/ws/{token}"
                self.ws_signature_valid = RequestValidator(self.auth_token).validate(url, {}, sig or "")
            if self.ws_reject or self.ws_signature_valid is False:
                await websocket.close(code=1008)
                return
            await websocket.accept()
            session = Session(websocket, self)
            self.sessions.append(session)
            reader = asyncio.create_task(session.read())
            try:
                await session.wait_event("connected")
                session.start = await session.wait_event("start")
                if self.script is not None:
                    self.scripts_running += 1
                    try:
                        await self.script(session)
                    finally:
                        self.scripts_running -= 1
                await asyncio.wait_for(session.closed.wait(), timeout=30)
            except BaseException as e:  # surfaced by the test through script_error
                self.script_error = e
                raise
            finally:
                reader.cancel()

        return app


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[..., Awaitable[FakeServer]]]:
    """Factory: `server = await fake_server(script, auth_token=..., rest_url=...)`; stopped after the test."""
    started: list[FakeServer] = []

    async def make(script: Script | None = None, **kwargs: Any) -> FakeServer:
        server = FakeServer(script, **kwargs)
        await server.http.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.http.stop()
