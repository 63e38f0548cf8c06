"""callgate.metrics pieces that need no server: the garbage-collector pause timer."""

from __future__ import annotations

import gc

from callgate.metrics import Metrics, time_gc_pauses


def count(metrics: Metrics, generation: str) -> float:
    return metrics.registry.get_sample_value("callgate_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_every_collection_is_timed_by_generation_until_uninstalled() -> None:
    metrics = Metrics()
    uninstall = time_gc_pauses(metrics)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        uninstall()
    assert count(metrics, "2") >= 1 and count(metrics, "0") >= 1
    total = metrics.registry.get_sample_value("callgate_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0
    before = count(metrics, "2")
    gc.collect()
    assert count(metrics, "2") == before  # uninstalled: no longer timed
