"""Run an ASGI app (FastAPI) on uvicorn inside the current event loop.

The REST stand-in and the tests' fake servers need a real HTTP/WebSocket server on a real port, but
in-process, so one pytest event loop can drive both ends of a call and nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C belongs to whoever runs the event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BackgroundServer:
    """uvicorn serving `app` on host:port (0 = ephemeral) until `stop()`; `base_url` is the bound URL.

    The socket is bound before uvicorn starts, so the port is known (and taken) at once and a busy
    port fails with OSError in `start()` rather than inside uvicorn's task.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        """http://host:port of the bound socket."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_base_url(self) -> str:
        """ws://host:port of the bound socket."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> BackgroundServer:
        """Bind, start uvicorn and wait until it accepts connections."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=self.log_level, lifespan="off", access_log=False, ws_max_size=16 * 1024 * 1024
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise the startup error
                raise RuntimeError("uvicorn exited during startup")
            await asyncio.sleep(0.005)
        return self

    async def stop(self) -> None:
        """Ask uvicorn to exit (closing open connections) and wait for it."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None

    async def __aenter__(self) -> BackgroundServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
