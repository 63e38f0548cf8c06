"""What a per-call pipeline is told about its call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callgate.settings import Settings

if TYPE_CHECKING:
    from pipelines.actions import CallControl


@dataclass
class CallConfig:
    """Identity, workflow and options of one call (from the Stream's `start` and TwiML <Parameter>s)."""

    settings: Settings
    workflow: str
    call_sid: str = ""
    stream_sid: str = ""
    params: dict[str, str] = field(default_factory=dict)
    control: CallControl | None = None  # REST actions on the live call; None = nothing to act on
