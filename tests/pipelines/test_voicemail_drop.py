"""voicemail_drop stops the call's detectors once its message plays (nothing listens any more)."""

from __future__ import annotations

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.tests.utils import run_test

from callgate.settings import Settings
from pipelines.actions import RecordingCallControl
from pipelines.call import CallConfig
from pipelines.message import MessageCache
from pipelines.voicemail_drop import VoicemailDrop
from processors.frames import AmdVerdictFrame, BeepEndFrame, BeepFrame, StopDetectorsFrame


def _audio() -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=b"\x00\x00" * 800, sample_rate=8000, num_channels=1)


def _workflow(tmp_path) -> VoicemailDrop:
    call = CallConfig(settings=Settings(_env_file=None), workflow="voicemail_drop", control=RecordingCallControl())
    return VoicemailDrop(call, MessageCache(tmp_path))


async def test_the_detectors_stop_once_the_message_plays(tmp_path) -> None:
    workflow = _workflow(tmp_path)
    frames = [_audio(), AmdVerdictFrame(label="machine", t_ms=100.0), _audio(), BeepFrame(t_ms=150.0)]
    frames += [_audio(), BeepEndFrame(t_ms=200.0), _audio(), _audio()]
    _down, up = await run_test(workflow, frames_to_send=frames)
    stops = [f for f in up if isinstance(f, StopDetectorsFrame)]
    assert not workflow.leaver.waiting and len(stops) == 1 and not stops[0].amd_only


async def test_the_detectors_go_on_while_the_greeting_plays(tmp_path) -> None:
    workflow = _workflow(tmp_path)
    frames = [_audio(), AmdVerdictFrame(label="machine", t_ms=100.0), _audio(), BeepFrame(t_ms=150.0), _audio()]
    _down, up = await run_test(workflow, frames_to_send=frames)
    assert workflow.leaver.waiting and not any(isinstance(f, StopDetectorsFrame) for f in up)
