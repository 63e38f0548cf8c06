"""What the vendor stand-ins share: a WebSocket server on its own thread and event loop, and fault plans.

A stand-in runs on a private loop so that its latency sleeps and its work never depend on (or block)
the loop of the server or test that talks to it, and so that it can be started from sync code (a
fixture, the CLI). Faults are planned per connection: `faults=["500", None]` rejects the first
handshake with a 500 and serves the second; `default_fault` applies once the list is used up.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

HANDSHAKE_FAULTS = {"429": HTTPStatus.TOO_MANY_REQUESTS, "500": HTTPStatus.INTERNAL_SERVER_ERROR}


def closed_port() -> int:
    """A loopback port that nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultPlan:
    """The fault for each new connection, in order, then `default`."""

    def __init__(self, faults: list[str | None] | None, default: str | None, allowed: tuple[str, ...]) -> None:
        for f in [*(faults or []), default]:
            if f is not None and f not in allowed:
                raise ValueError(f"unknown fault {f!r} (one of {', '.join(allowed)})")
        self._faults = list(faults or [])
        self.default = default
        self.served: list[str | None] = []

    def next(self) -> str | None:
        fault = self._faults.pop(0) if self._faults else self.default
        self.served.append(fault)
        return fault


class ThreadedWebSocketServer:
    """A websockets server on 127.0.0.1 run by a private event loop thread (`start()` / `stop()`)."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self.connections = 0
        self.connection_faults: dict[int, str | None] = {}
        self._pending_fault: str | None = None

    # subclasses implement these two
    async def handler(self, ws: ServerConnection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reject(self, request: Request) -> tuple[HTTPStatus, str] | None:
        """A handshake answer other than 101 (status, body), or None to accept."""
        return None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self._pending_fault = None
        verdict = self.reject(request)
        if verdict is None:
            self.connection_faults[id(connection)] = self._pending_fault
            return None
        status, body = verdict
        return connection.respond(status, body)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            await self.handler(ws)
        finally:
            self.connection_faults.pop(id(ws), None)

    def fault_of(self, ws: ServerConnection) -> str | None:
        """The fault `reject()` planned for this accepted connection (set `self._pending_fault` there)."""
        return self.connection_faults.get(id(ws))

    def start(self) -> ThreadedWebSocketServer:
        if self.refuse:
            self.port = closed_port()
            return self
        ready: Future[int] = Future()

        async def main() -> None:
            self._server = await serve(
                self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=2**22,
                ping_interval=None,
            )
            ready.set_result(self._server.sockets[0].getsockname()[1])
            await self._server.wait_closed()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            except Exception as e:  # pragma: no cover - surfaced through `ready`
                if not ready.done():
                    ready.set_exception(e)
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self).__name__)
        self._thread.start()
        self.port = ready.result(timeout=10)
        return self

    def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run a coroutine on the stand-in's loop and wait for it (for tests that poke a live server)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._server is not None and self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> ThreadedWebSocketServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
