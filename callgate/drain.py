"""Graceful drain: on SIGTERM a deploy never cuts a live call.

The first SIGTERM does not stop uvicorn. It marks the process as draining: `GET /readyz` fails at once
(the load balancer stops sending traffic), new voice webhooks get polite TwiML (a goodbye, or a
<Redirect> to another instance), and calls already live, or whose webhook was answered and whose
stream is still connecting, run to their end. When none is left, or after DRAIN_TIMEOUT_SECS, uvicorn
is told to exit. A second SIGTERM, or Ctrl-C, exits at once.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

import uvicorn
from loguru import logger


class Drain:
    """Which calls this process still owes; whether it is draining and may exit."""

    def __init__(self, timeout_secs: float) -> None:
        self.timeout_secs = timeout_secs
        self.draining = False
        self.started_at: float | None = None
        self._live: set[str] = set()
        self._pending: dict[str, float] = {}  # webhook answered, stream not started yet: call -> deadline

    def begin(self) -> None:
        """Start draining (signal-safe: only sets fields)."""
        if not self.draining:
            self.draining = True
            self.started_at = time.monotonic()

    def expect(self, call_sid: str, within_secs: float) -> None:
        """A webhook was answered with a Stream URL: its stream counts as live until it starts or expires."""
        if len(self._pending) >= 1000:  # streams that never came: forget the expired ones
            self._purge()
        self._pending[call_sid] = time.monotonic() + within_secs

    def _purge(self) -> None:
        now = time.monotonic()
        for sid in [s for s, deadline in self._pending.items() if deadline <= now]:
            del self._pending[sid]

    def call_started(self, call_sid: str) -> None:
        self._pending.pop(call_sid, None)
        self._live.add(call_sid)

    def call_ended(self, call_sid: str) -> None:
        self._pending.pop(call_sid, None)
        self._live.discard(call_sid)

    @property
    def live(self) -> int:
        return len(self._live)

    def idle(self) -> bool:
        self._purge()
        return not self._live and not self._pending

    def should_exit(self) -> str | None:
        """Why the process may exit now, or None (not draining, or calls still live)."""
        if not self.draining or self.started_at is None:
            return None
        if self.idle():
            return "no live calls left"
        if time.monotonic() - self.started_at >= self.timeout_secs:
            return f"DRAIN_TIMEOUT_SECS ({self.timeout_secs:g} s) reached with {self.live} calls live"
        return None


class DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM drains instead of exiting (checked on uvicorn's 100 ms tick)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.drain.draining and not self.should_exit:
            self.drain.begin()  # no logging here: this runs inside a signal handler
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and not self._announced:
            self._announced = True
            logger.warning(
                f"SIGTERM: draining; {self.drain.live} live calls may run up to {self.drain.timeout_secs:g} s"
            )
        reason = self.drain.should_exit()
        if reason and not self.should_exit:
            logger.info(f"drained: {reason}; exiting")
            self.should_exit = True
        return await super().on_tick(counter)
