"""Shared by the agent scripts: the real server (uvicorn on loopback, its own thread) wired to the
Twilio REST stand-in and to the Deepgram, OpenAI and Cartesia stand-ins, plus scripted calls into it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AUTH_TOKEN = "bench-auth-token-not-a-secret"
API_KEY = "bench-control-api-key-not-a-secret"  # the server refuses GET /calls without a key
ACCOUNT_SID = "AC" + "b" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def agent_server(rest_url: str, agent_toml: str, dg: Any, oa: Any, ct: Any, **overrides: Any) -> Iterator[str]:
    """Serve callgate with the stand-ins as its vendors; yields the base URL."""
    import uvicorn
    from loguru import logger

    import server
    from callgate.settings import Settings
    from simulator.vendors import vendor_settings

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="callgate-bench-") as tmp:
        agents = Path(tmp) / "agents"
        agents.mkdir()
        (agents / "bench.toml").write_text(agent_toml)
        settings = Settings(
            _env_file=None,
            public_base_url=f"http://127.0.0.1:{port}",
            port=port,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base_url=rest_url,
            message_cache_dir=Path(tmp) / "cache",
            agents_dir=agents,
            **vendor_settings(dg, oa, ct),
            call_timeout_secs=600,
            api_keys=API_KEY,
            log_level="ERROR",
            **overrides,
        )
        app = server.create_app(settings)
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
        thread.start()
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            srv.should_exit = True
            thread.join(timeout=10)


async def scripted_call(base: str, rest: Any, script: Any, delay_ms: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """One scripted call into the agent; returns the simulator's report and the server's call record."""
    from simulator.control import wait_for_record
    from simulator.phone import call_agent

    report = await call_agent(
        base, script, agent="bench", rest=rest, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, network_delay_ms=delay_ms
    )
    return report, await wait_for_record(base, report.summary["call_sid"], API_KEY)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
