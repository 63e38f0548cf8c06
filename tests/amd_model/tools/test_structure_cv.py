"""structure_cv: the merged verdict equals replaying the whole preset with the detector inserted; the
CV run keeps to the cost caps, reads each greeting's latency on the fold that held it out, and
prints the test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amd_model.tools.structure_cv import Candidate, cv_folds, grid, main, merged
from amd_model.traces import SpeechEvent, Trace, replay_trace, save_trace
from processors.amd_decision import DEFAULT_PRESETS_PATH, load_presets

CLASSES = ["none", "human", "machine", "ivr", "carrier_intercept"]


def trace(call_id: str, p_machine: list[float], speech: list[tuple[str, float]], **kw) -> Trace:
    steps = []
    for i, pm in enumerate(p_machine):
        none = 0.9 if pm < 0 else 0.0
        pm = max(pm, 0.0)
        steps.append([(i + 1) * 100.0, none, (1 - none) * (1 - pm), (1 - none) * pm, 0.0, 0.0])
    events = [SpeechEvent(ev, t, int(t // 100)) for ev, t in speech]
    return Trace(call_id=call_id, classes=CLASSES, steps=steps, speech=events, **kw)


def greeting(call_id: str, level: float, extra_steps: int = 0) -> Trace:
    """A greeting: talks from 300 ms for 6 s; p(machine) sits at `level` (below the preset's 0.95)."""
    pm = [-1] * 3 + [level] * (80 + extra_steps)
    return trace(call_id, pm, [("start", 300.0), ("end", 6300.0)], label="machine")


def pickup(call_id: str, level: float, split: str) -> Trace:
    """A pickup: 'Hello?' for 600 ms, then waits; p(machine) `level` while talking, then human."""
    pm = [-1] * 3 + [level] * 6 + [0.02] * 70
    return trace(
        call_id,
        pm,
        [("start", 300.0), ("end", 900.0)],
        label="human",
        subtype="human_short",
        truth={"split": split, "first_utterance_end_ms": 900.0},
    )


@pytest.mark.parametrize("cand", [Candidate(0.75, 500, 200, True), Candidate(0.7, 300, 1000, False)])
def test_merged_verdict_equals_replaying_the_whole_preset(cand: Candidate) -> None:
    preset = load_presets()["default"]
    base = [d for d in preset if d.name != "machine_talking"]
    i = next(n for n, d in enumerate(base) if d.name == "human") + 1
    whole = [*base[:i], cand.detector(), *base[i:]]
    for t in [greeting("g", 0.8), greeting("g2", 0.6), pickup("p", 0.9, "train"), pickup("q", 0.5, "val")]:
        assert merged(replay_trace(t, base), replay_trace(t, [cand.detector()])) == replay_trace(t, whole)


def test_cv_run_respects_the_caps_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real, corpus = tmp_path / "real", tmp_path / "corpus"
    # greetings at p(machine) 0.70-0.79: below the preset's machine_fast (0.8), so they wait for the
    # late detectors unless the new one fires
    for n, level in enumerate(np.linspace(0.7, 0.79, 10)):
        save_trace(greeting(f"greet{n}", float(level), extra_steps=n), real)
    # tuning humans that sound like a greeting while their 600 ms "Hello?" lasts (p(machine) 0.78):
    # a candidate whose window fits inside that "Hello?" at T <= 0.75 calls them machine, so the zero
    # caps leave only the 800 ms window or 1000 ms of talk (or thresholds these greetings never reach)
    for n in range(6):
        save_trace(pickup(f"h{n}", 0.78, "train"), corpus)
    for n in range(3):
        save_trace(pickup(f"t{n}", 0.3, "test"), corpus)
    save_trace(greeting("tm", 0.9), corpus)
    (corpus / "tm.json").write_text(
        json.dumps(json.loads((corpus / "tm.json").read_text()) | {"truth": {"split": "test"}})
    )
    # the preset the scenario is written against (machine_fast at 0.8), not whatever ships today
    presets = json.loads(DEFAULT_PRESETS_PATH.read_text())
    for d in presets["workflows"]["default"]["detectors"]:
        if d["name"] == "machine_fast":
            d["threshold"] = 0.8
    (tmp_path / "presets.json").write_text(json.dumps(presets))
    rc = main(
        ["--real-traces", str(real), "--corpus-traces", str(corpus), "--max-humans", "0", "--max-business", "0",
         "--presets", str(tmp_path / "presets.json")]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("(tuning: 0 humans, 0 business lost)") == 5
    picked = next(line for line in out.splitlines() if line.startswith("picked on all greetings"))
    # every greeting, 800 ms after onset: the fastest allowed (1000 ms of talk would be 1000 ms)
    assert "threshold=0.7, window_ms=800, min_talk_ms=200" in picked
    assert "-> 5-fold CV 800 ms" in out
    assert "5-fold CV" in out and "test split (4 calls), + detector: accuracy 100.0 %" in out
    assert len(grid()) == 60


def test_identical_recordings_share_a_fold() -> None:
    real = [greeting(f"g{n}", 0.8, extra_steps=n) for n in range(8)] + [greeting("twin_of_g3", 0.8, extra_steps=3)]
    folds = cv_folds(real, 5)
    assert sorted(n for f in folds for n in f) == sorted(t.call_id for t in real)
    assert any({"g3", "twin_of_g3"} <= set(f) for f in folds)


def test_missing_traces_are_a_one_line_error_not_a_traceback(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--real-traces", str(tmp_path / "none"), "--corpus-traces", str(tmp_path)])
    assert e.value.code == 2
    assert "no traces there" in capsys.readouterr().err
