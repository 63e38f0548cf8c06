"""Drain bookkeeping: which calls a draining process still owes, and when it may exit."""

from __future__ import annotations

import time

from callgate.drain import Drain


def test_exit_waits_for_live_calls_and_connecting_streams():
    d = Drain(timeout_secs=60)
    d.expect("CA1", within_secs=60)  # webhook answered, stream not started yet
    d.call_started("CA2")
    assert d.should_exit() is None  # not draining: never
    d.begin()
    assert d.draining and d.should_exit() is None
    d.call_started("CA1")
    d.call_ended("CA2")
    assert d.live == 1 and d.should_exit() is None
    d.call_ended("CA1")
    assert d.should_exit() == "no live calls left"


def test_a_stream_that_never_comes_stops_counting_when_its_token_expires():
    d = Drain(timeout_secs=60)
    d.expect("CA1", within_secs=0.05)
    d.begin()
    assert d.should_exit() is None
    time.sleep(0.06)
    assert d.should_exit() == "no live calls left"


def test_the_timeout_ends_the_drain_with_calls_still_live():
    d = Drain(timeout_secs=0.05)
    d.call_started("CA1")
    d.begin()
    assert d.should_exit() is None
    time.sleep(0.06)
    assert "DRAIN_TIMEOUT_SECS" in d.should_exit() and "1 calls live" in d.should_exit()


def test_abandoned_webhooks_do_not_pile_up():
    d = Drain(timeout_secs=60)
    for i in range(5000):
        d.expect(f"CA{i}", within_secs=0)
    assert len(d._pending) <= 1001
