"""The real-human pickup set: calls shaped like a person answering, labelled so `callgate eval` reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amd_model.tools import real_humans
from amd_model.tools.evaluation import read_labels
from callgate import synth
from callgate.audio import SAMPLE_RATE, load_audio


def _utt(name: str, speaker: str, secs: float, f0: float) -> real_humans.Utterance:
    return real_humans.Utterance(name, speaker, synth.harmonic_vowel(f0, secs, seed=1).astype(np.float32))


def _active_ms(x: np.ndarray, thresh: float) -> np.ndarray:
    """Start times (ms) of the 10 ms frames louder than thresh (RMS)."""
    n = x.size // 80
    e = np.sqrt(np.mean(x[: n * 80].reshape(n, 80).astype(np.float64) ** 2, axis=1))
    return np.flatnonzero(e > thresh) * 10.0


def test_a_single_pickup_is_open_line_the_utterance_then_quiet_and_the_meta_dates_it():
    u = _utt("a", "s1", 1.2, 180.0)
    y, meta = real_humans.build_call(u, None, np.random.default_rng(3))
    loud = _active_ms(y, 0.3 * float(np.abs(y).max()))
    assert abs(loud[0] - meta["speech_onset_ms"]) <= 30
    assert abs(loud[-1] - meta["first_utterance_end_ms"]) <= 40
    assert meta["first_utterance_end_ms"] - meta["speech_onset_ms"] == pytest.approx(1200, abs=2)
    assert y.size / SAMPLE_RATE >= 8.0 + 1.2  # the line stays open after the person stops


def test_a_double_pickup_says_it_again_after_a_wait_of_1_2_to_2_s():
    u, v = _utt("a", "s1", 0.8, 180.0), _utt("b", "s1", 0.6, 200.0)
    y, meta = real_humans.build_call(u, v, np.random.default_rng(4))
    loud = _active_ms(y, 0.3 * float(np.abs(y).max()))
    after = loud[loud > meta["first_utterance_end_ms"] + 100]
    assert after.size, "the second utterance is missing"
    gap = after[0] - meta["first_utterance_end_ms"]
    assert 1150 <= gap <= 2050


def test_build_writes_a_callgate_eval_folder_of_human_calls(tmp_path, monkeypatch):
    utts = [_utt("short1", "s1", 1.0, 180.0), _utt("short2", "s1", 0.9, 190.0), _utt("long", "s2", 3.0, 120.0)]
    monkeypatch.setattr(real_humans, "collect", lambda: utts)
    written = real_humans.build(tmp_path, seed=0, variants=2)
    calls = read_labels(tmp_path)
    # Speaker s1 has two utterances, so each gets singles and doubles; s2's only one gets singles.
    assert len(written) == len(calls) == 2 * 2 * 2 + 2
    assert {c.label for c in calls} == {"human"}
    subs = {c.file: c.subtype for c in calls}
    assert all(s == "real_long" for f, s in subs.items() if "long" in f)
    assert all(s == "real_short" for f, s in subs.items() if "short" in f)
    for c in calls:
        assert c.speech_onset_ms is not None and c.first_utterance_end_ms > c.speech_onset_ms
        assert load_audio(c.path).size > 8 * SAMPLE_RATE
    metas = [json.loads(x) for x in (tmp_path / "meta.jsonl").read_text().splitlines()]
    assert metas == written
    assert {m["shape"] for m in metas} == {"single", "double"}


def test_build_refuses_to_write_an_empty_set(tmp_path, monkeypatch):
    monkeypatch.setattr(real_humans, "collect", lambda: [])
    with pytest.raises(SystemExit, match="no real human recordings"):
        real_humans.build(tmp_path)


def test_eval_reports_the_real_human_set_per_length_through_the_shipped_model(monkeypatch):
    from amd_model.tools.evaluation import evaluate_real_humans, format_humans_report
    from processors.amd_decision import load_presets

    utts = [_utt("short1", "s1", 0.8, 180.0), _utt("short2", "s1", 0.7, 170.0), _utt("long", "s2", 3.0, 120.0)]
    monkeypatch.setattr(real_humans, "ensure_packages", lambda install=True: [])
    monkeypatch.setattr(real_humans, "collect", lambda: utts)
    rep = evaluate_real_humans(load_presets()["default"])
    assert rep is not None and rep["n"] == 2 * 3 * 2 + 3 and rep["recording_sets"] == 2
    subs = rep["callgate"]["accuracy_by_subtype"]
    assert subs["real_short"]["n"] == 12 and subs["real_long"]["n"] == 3
    text = format_humans_report(rep)
    assert "says <= 2.5 s, then waits (n=12)" in text and "talks on for 2.5-7 s (n=3)" in text
    by_set = rep["callgate_human_by_set"]
    assert {k: v["n"] for k, v in by_set.items()} == {"s1": 12, "s2": 3}
    called_human = sum(round(v["accuracy"] * v["n"]) for v in subs.values())
    assert sum(v["human"] for v in by_set.values()) == called_human
    rep["callgate_human_by_set"] = {"s1": {"n": 12, "human": 9}, "s2": {"n": 3, "human": 3}}
    assert "most often: s1 9/12 human (1 of 2 sets all human)" in format_humans_report(rep)


def test_ktuberling_words_become_one_recording_set_per_language(tmp_path):
    import soundfile as sf

    t = np.arange(int(0.6 * 44100)) / 44100
    word = np.stack([0.3 * np.sin(2 * np.pi * 150.0 * t)] * 2, axis=1).astype(np.float32)  # 0.6 s, stereo
    for lang, n in (("en", 6), ("sr", 2), ("sr@latin", 2)):
        (tmp_path / lang).mkdir()
        for k in range(n):
            sf.write(tmp_path / lang / f"w{k}.ogg", word, 44100)
    (tmp_path / "en.soundtheme").write_text("<language code='en'/>")
    utts = real_humans.ktuberling_sets(tmp_path, per_set=4)
    assert [u.speaker for u in utts].count("ktuberling_en") == 4  # spread over the six, four kept
    assert {u.speaker for u in utts} == {"ktuberling_en", "ktuberling_sr"}  # sr@latin repeats sr
    assert all(abs(u.audio.size - 0.6 * 8000) < 80 and u.audio.dtype == np.float32 for u in utts)
    assert real_humans.ktuberling_sets(tmp_path / "missing") == []


def test_eval_skips_the_real_human_set_when_the_packages_are_missing(monkeypatch):
    from amd_model.tools.evaluation import evaluate_real_humans
    from processors.amd_decision import load_presets

    monkeypatch.setattr(real_humans, "ensure_packages", lambda install=True: ["alsa-utils"])
    assert evaluate_real_humans(load_presets()["default"]) is None
