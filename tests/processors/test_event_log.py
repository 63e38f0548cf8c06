"""EventLog: every call event goes to the listener; the log keeps its own copy only when asked."""

from __future__ import annotations

from pipecat.tests.utils import run_test

from processors.event_log import EventLog
from processors.frames import BeepFrame


async def test_events_reach_the_listener_and_only_a_keeping_log_holds_a_copy():
    for keep in (True, False):
        heard: list[dict] = []
        log = EventLog(on_event=heard.append, keep=keep)
        await run_test(
            log,
            frames_to_send=[BeepFrame(onset_ms=900, hz=850, t_ms=1000)] * 3,
            expected_down_frames=[BeepFrame] * 3,
        )
        assert [e["event"] for e in heard] == ["beep"] * 3
        # the server's call record keeps the events (capped); an uncapped second copy would grow all call
        assert log.events == (heard if keep else [])
