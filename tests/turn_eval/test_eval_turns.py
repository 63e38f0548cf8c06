"""`callgate eval-turns` and the turn-eval tools: the set builder, the offline runner, the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from callgate.cli import main
from processors.speech import SpeechAnalyzer
from turn_eval.dataset import build_call, build_set, load_labels
from turn_eval.metrics import Tally, score_call, summarize
from turn_eval.runner import SystemRun, _speech_analyzer, load_call


def _labels() -> dict:
    return {
        "duration_ms": 20000, "condition": "tv",
        "turns": [
            {"start_ms": 1000, "end_ms": 4000, "pauses": [[2000, 2800]],
             "segments": [{"text": "my number is", "start_ms": 1000, "end_ms": 2000},
                          {"text": "four one five", "start_ms": 2800, "end_ms": 4000}]},
            {"start_ms": 9000, "end_ms": 10000, "pauses": [],
             "segments": [{"text": "yes", "start_ms": 9000, "end_ms": 10000}]},
        ],
        "background": [{"kind": "tv", "start_ms": 6000, "end_ms": 7000, "rel_db": -12.0},
                       {"kind": "tv", "start_ms": 14000, "end_ms": 15000, "rel_db": -18.0}],
    }


def test_metrics_count_premature_ends_delays_background_starts_and_lost_speech() -> None:
    run = SystemRun(
        starts=[(1100, 1000), (2900, 2800), (6200, 6000), (9080, 9000)],
        ends=[2300, 4250, 10400],
        speech=[(1000, 2000), (2800, 3600), (9000, 10000)],
    )
    t = Tally()
    score_call(_labels(), run, t)
    s = summarize("x", t)
    assert s.premature_paused == 1.0 and s.premature_all == 0.5  # the end at 2300 cut the paused turn
    assert sorted(t.delays) == [250, 400]
    assert s.bg_segments == 2 and s.bg_started == 0.5
    assert s.bg_by_level == {"-10..-15 dB": "1/1", "-15..-20 dB": "0/1"}
    assert t.lost_ms == pytest.approx(400)  # 3600..4000 of the second segment
    assert s.start_delay_max_ms == 100


def test_a_turn_never_ended_counts_as_missed_with_the_whole_gap() -> None:
    t = Tally()
    score_call(_labels(), SystemRun(starts=[(1100, 1000)], ends=[]), t)
    assert t.missed_ends == 2 and t.delays == [5000, 10000]


def test_set_builder_is_reproducible_and_labels_are_consistent() -> None:
    a1, l1 = build_call("test", 3, seed=5)
    a2, l2 = build_call("test", 3, seed=5)
    assert np.array_equal(a1, a2) and l1 == l2
    for turn in l1["turns"]:
        assert turn["start_ms"] < turn["end_ms"]
        for p in turn["pauses"]:
            assert 300 <= p[1] - p[0] <= 1500
    assert len(a1) / 8 == pytest.approx(l1["duration_ms"], abs=1)


def test_replayed_confidences_drive_the_production_vad_identically(tmp_path) -> None:
    build_set(tmp_path, "dev", 1, seed=2)
    data = load_labels(tmp_path)
    name, labels = next(iter(data["files"].items()))
    call = load_call(tmp_path, name, labels)
    real, replay = SpeechAnalyzer(), _speech_analyzer(call.conf, {})
    ev_real, ev_replay = [], []
    for i in range(0, len(call.pcm), 160):
        ev_real += real.process(call.pcm[i : i + 160])
        ev_replay += replay.process(call.pcm[i : i + 160])
    assert ev_real and ev_real == ev_replay


def test_cli_prints_callgate_beside_the_three_baselines(tmp_path, capsys) -> None:
    build_set(tmp_path, "dev", 1, seed=4)
    assert main(["eval-turns", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["systems"]) == {"callgate", "timer_800ms", "pipecat_default", "vad_only"}
    for s in out["systems"].values():
        assert s["turns"] >= 4 and s["delay_p50_ms"] >= 0
    # a second run reuses the cached Silero and Smart-Turn results and gives the same figures
    assert main(["eval-turns", str(tmp_path), "--json", "--plot", str(tmp_path / "c.png")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["systems"] == out["systems"]
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys) -> None:
    assert main(["eval-turns", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["eval-turns", str(tmp_path)]) == 2
    assert "no labels.json" in capsys.readouterr().err
    (tmp_path / "labels.json").write_text('{"files": {"a.wav": {"turns": [{"start_ms": 1}]}}}')
    assert main(["eval-turns", str(tmp_path)]) == 2
    assert "malformed labels" in capsys.readouterr().err
    (tmp_path / "labels.json").write_text("{}")
    assert main(["eval-turns", str(tmp_path), "--systems", "callgate,siri"]) == 2
    assert "unknown system" in capsys.readouterr().err
