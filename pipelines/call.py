"""What a per-call pipeline is told about its call."""

from __future__ import annotations

from dataclasses import dataclass, field

from callgate.settings import Settings


@dataclass
class CallConfig:
    """Identity, workflow and options of one call (from the Stream's `start` and TwiML <Parameter>s)."""

    settings: Settings
    workflow: str
    call_sid: str = ""
    stream_sid: str = ""
    params: dict[str, str] = field(default_factory=dict)
