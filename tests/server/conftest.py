"""A real callgate server (uvicorn, real sockets) on a free loopback port, per test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from callgate.settings import Settings

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
API_KEY = "test-api-key-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}  # headers for the control API (POST /calls, GET /calls/...)
# For tests that stream recorded audio faster than real time (speed > 1): lifts the real-time bounds.
FAST_STREAM = {"stream_max_ahead_ms": 0, "stream_max_messages_per_sec": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    app: object

    @property
    def state(self):
        return self.app.state.callgate


def start_server(settings: Settings, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    import server
    from callgate.edge.http_limits import uvicorn_options

    app = server.create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(settings, app.state.callgate.reject))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return srv, thread
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def make_settings(tmp_path: Path, port: int, **overrides) -> Settings:
    values = dict(
        public_base_url=f"http://127.0.0.1:{port}",
        port=port,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url="http://127.0.0.1:9",  # overridden by tests that check hang-up
        message_cache_dir=tmp_path / "cache",
        messages_dir=tmp_path / "messages",
        call_timeout_secs=30.0,
        api_keys=API_KEY,
        token_store_path=tmp_path / f"used-tokens-{port}.sqlite3",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start real servers with custom settings; all are stopped at the end of the test."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def factory(**overrides) -> RunningServer:
        port = overrides.pop("port", None) or free_port()
        settings = make_settings(tmp_path, port, **overrides)
        srv, thread = start_server(settings, port)
        running.append((srv, thread))
        return RunningServer(base_url=f"http://127.0.0.1:{port}", settings=settings, app=srv.config.app)

    yield factory
    for srv, thread in running:
        srv.should_exit = True
        thread.join(timeout=10)


async def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition()` (server state settles just after the socket closes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
