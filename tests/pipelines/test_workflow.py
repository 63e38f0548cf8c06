"""The workflow base: what a hand-off does when Twilio says the call has already ended."""

from __future__ import annotations

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.tests.utils import run_test

from callgate.settings import Settings
from pipelines.actions import CallGoneError
from pipelines.call import CallConfig
from pipelines.workflow import Workflow


class GoneControl:
    async def redirect(self, twiml: str) -> bool:
        raise CallGoneError("Call is not in-progress. Cannot redirect.")


class RefusingControl:
    async def redirect(self, twiml: str) -> bool:
        return False


class HandsOffAtOnce(Workflow):
    name = "test"

    async def on_audio(self) -> None:
        await self.human_action()


async def _outcome(control) -> str | None:
    workflow = HandsOffAtOnce(CallConfig(settings=Settings(_env_file=None), workflow="test", control=control))
    frame = InputAudioRawFrame(audio=b"\x00\x00" * 160, sample_rate=8000, num_channels=1)
    await run_test(workflow, frames_to_send=[frame])
    return workflow.outcome


async def test_a_hand_off_to_a_call_that_already_ended_is_the_callers_hang_up():
    assert await _outcome(GoneControl()) == "remote_hangup"


async def test_a_hand_off_twilio_refuses_for_another_reason_is_a_failed_action():
    assert await _outcome(RefusingControl()) == "goodbye_failed"
