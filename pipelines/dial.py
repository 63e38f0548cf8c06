"""parallel_dial and power_dial: decide who answered as fast as the workflow's AMD preset allows, report
the verdict at once (event + AMD_CALLBACK_URL), then connect a human or hang up on anything else.

The two differ only in their AMD preset (pipelines/presets/amd.json) and in what an `unknown` verdict
means: parallel dialing wants precision (a false "human" interrupts a rep), power dialing wants recall
(never hang up on a human), so power_dial treats `unknown` as a possible human.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipelines.actions import send_verdict
from pipelines.workflow import Workflow
from processors.frames import AmdVerdictFrame


class DialWorkflow(Workflow):
    """Report the first AMD verdict, then act on it."""

    audio_chunk_ms = 100  # acts on AMD verdicts (100 ms steps) only
    unknown_is_human: ClassVar[bool] = False

    async def on_verdict(self, frame: AmdVerdictFrame) -> None:
        payload: dict[str, Any] = {
            "call_sid": self.call.call_sid,
            "workflow": self.name,
            "label": frame.label,
            "confidence": round(frame.confidence, 4),
            "t_ms": round(frame.t_ms),
            "detector": frame.detector,
        }
        if self.settings.amd_callback_url:
            send_verdict(self.settings.amd_callback_url, payload)
        self.outcome = f"amd_{frame.label}"
        if frame.label == "human" or (frame.label == "unknown" and self.unknown_is_human):
            await self.human_action()
        else:
            await self.hang_up(f"amd_{frame.label}")


class ParallelDial(DialWorkflow):
    name = "parallel_dial"


class PowerDial(DialWorkflow):
    name = "power_dial"
    unknown_is_human = True
