"""MarkTracker: marks after audio, played vs cancelled by `clear`."""

from __future__ import annotations

from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame, OutputTransportMessageFrame
from pipecat.tests.utils import SleepFrame, run_test

from processors.frames import MarkResolvedFrame, PlaybackMarkFrame, TwilioMarkFrame
from processors.marks import MarkLedger, MarkTracker


def audio() -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=b"\x00\x00" * 160, sample_rate=8000, num_channels=1)


def test_ledger_played_cancelled_and_unknown():
    ledger = MarkLedger.new()
    ledger.sent("a")
    assert ledger.echoed("a") is True
    assert ledger.echoed("a") is None  # already resolved
    ledger.sent("b")
    ledger.sent("c")
    assert sorted(ledger.cleared()) == ["b", "c"]
    assert ledger.echoed("b") is None  # its post-clear echo is not a played mark
    ledger.sent("d")  # sent after the clear, before any new audio: echoed at once = cancelled
    assert ledger.echoed("d") is False
    ledger.audio_sent()
    ledger.sent("e")
    assert ledger.echoed("e") is True
    assert (ledger.played, ledger.cancelled, ledger.unexpected) == (2, 3, 2)


async def test_tracker_sends_twilio_mark_and_reports_played():
    tracker = MarkTracker()
    tracker.set_stream_sid("MZ1")
    down, up = await run_test(
        tracker,
        frames_to_send=[audio(), PlaybackMarkFrame(mark_name="m1"), SleepFrame(0.05), TwilioMarkFrame(mark_name="m1")],
        expected_down_frames=[OutputAudioRawFrame, OutputTransportMessageFrame, MarkResolvedFrame],
        expected_up_frames=[MarkResolvedFrame],
    )
    assert down[1].message == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}
    assert up[0].mark_name == "m1" and up[0].played is True


async def test_tracker_cancels_marks_pending_at_interruption():
    tracker = MarkTracker()
    down, up = await run_test(
        tracker,
        frames_to_send=[
            audio(), PlaybackMarkFrame(mark_name="reply"), SleepFrame(0.05), InterruptionFrame(),
            TwilioMarkFrame(mark_name="reply"),  # Twilio's echo after the clear
        ],
        expected_up_frames=[MarkResolvedFrame],
    )
    assert up[0].mark_name == "reply" and up[0].played is False
    resolved = [f for f in down if isinstance(f, MarkResolvedFrame)]
    assert len(resolved) == 1 and resolved[0].played is False
    assert tracker.ledger.cancelled == 1 and tracker.ledger.played == 0
