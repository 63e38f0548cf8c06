"""Counted rejections, logged at a rate-limited level so a flood of bad requests cannot flood the log."""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger


class Rejections:
    """`rejected[reason]` counts every refusal; the first `per_minute` per reason each minute log at WARNING."""

    def __init__(self, per_minute: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.counts: dict[str, int] = {}
        self._clock = clock
        self._window: dict[str, tuple[float, int]] = {}  # reason -> (window start, lines logged in it)

    def __call__(self, reason: str, message: str = "") -> None:
        """Log (maybe) then count: whoever sees the count also sees the log line."""
        now = self._clock()
        start, logged = self._window.get(reason, (now, 0))
        if now - start >= 60.0:
            if logged > self.per_minute:
                logger.warning(f"{logged - self.per_minute} more '{reason}' rejections in the last minute")
            start, logged = now, 0
        logged += 1
        self._window[reason] = (start, logged)
        text = f"rejected ({reason}): {message}" if message else f"rejected ({reason})"
        logger.log("WARNING" if logged <= self.per_minute else "DEBUG", text)
        self.counts[reason] = self.counts.get(reason, 0) + 1
