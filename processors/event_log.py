"""Collects the call's public events (beep, speech, amd, marks, workflow actions) as JSON-able dicts.

The same log feeds `callgate replay --json`, the server's per-call status endpoint and the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import CallEvent


class EventLog(FrameProcessor):
    """Records every CallEvent frame that flows downstream past it, then forwards it.

    `keep=False` only hands each event to `on_event`: the server's call record keeps them (capped), and a
    second, uncapped copy would grow for as long as a call lasts.
    """

    def __init__(
        self, on_event: Callable[[dict[str, Any]], None] | None = None, *, keep: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.events: list[dict[str, Any]] = []
        self._on_event = on_event
        self._keep = keep

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, CallEvent) and direction == FrameDirection.DOWNSTREAM:
            event = frame.to_event()
            if self._keep:
                self.events.append(event)
            if self._on_event:
                self._on_event(event)
        await self.push_frame(frame, direction)
