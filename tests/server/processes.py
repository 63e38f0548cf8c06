"""`callgate serve` as a real child process (for SIGTERM, SIGKILL and multi-process tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.conftest import ACCOUNT_SID, API_KEY, AUTH_TOKEN, free_port

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """`python -m callgate.cli serve` on a free loopback port with settings from the environment."""

    def __init__(self, tmp_path: Path, *, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        self.workers = workers
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "PUBLIC_BASE_URL": self.base_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
            "MESSAGE_CACHE_DIR": str(tmp_path / "cache"),
            "MESSAGES_DIR": str(tmp_path / "messages"),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}",
            "CALL_TIMEOUT_SECS": "30",
            "LOG_LEVEL": "INFO",
            "CALLGATE_API_KEYS": API_KEY,
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callgate.cli", "serve", "--workers", str(self.workers)],
            cwd=self.log_path.parent, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start-up ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "| DEBUG" not in line)[-6000:] if lines else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
