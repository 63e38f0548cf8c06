"""The gate's evaluation: what counts as background starting a barge-in, a delayed caller start, and the set's voices."""

from __future__ import annotations

import numpy as np
import pytest

from callgate import synth
from callgate.audio import save_wav, to_int16
from processors.gate import GateParams
from turn_eval.dataset import REAL_SPEAKERS, build_call, build_set, load_labels
from turn_eval.gate_eval import evaluate_gate, format_report
from turn_eval.metrics import Tally, plain_vad_hears, score_call, summarize
from turn_eval.runner import SystemRun, load_call


def _labels() -> dict:
    return {
        "duration_ms": 20000, "condition": "tv",
        "turns": [
            {"start_ms": 1000, "end_ms": 2000, "pauses": [],
             "segments": [{"text": "yes", "start_ms": 1000, "end_ms": 2000}]},
            {"start_ms": 9000, "end_ms": 10000, "pauses": [],
             "segments": [{"text": "okay", "start_ms": 9000, "end_ms": 10000}]},
            {"start_ms": 16000, "end_ms": 17000, "pauses": [],
             "segments": [{"text": "fine", "start_ms": 16000, "end_ms": 17000}]},
        ],
        "background": [{"kind": "tv", "start_ms": 5000, "end_ms": 6000, "rel_db": -8.0},
                       {"kind": "tv", "start_ms": 12000, "end_ms": 13000, "rel_db": -16.0}],
    }


def test_the_gate_opening_on_background_counts_as_a_barge_in_without_a_new_turn() -> None:
    # The endpointer opened no turn in either background span, but the gate opened in the first one:
    # the interruption handler would have barged in on the TV.
    run = SystemRun(starts=[(1100, 1000), (9100, 9000), (16100, 16000)], vad_starts=[1096, 9096, 16096],
                    gate_starts=[(1100, 1000), (5300, 5000), (9100, 9000), (16100, 16000)],
                    gate_ends=[1900, 5800, 9900, 16900])
    t = Tally()
    score_call(_labels(), run, t)
    assert (t.bg_segments, t.bg_started) == (2, 1)
    assert t.bg_by_level == {"-6..-10 dB": [1, 1], "-15..-20 dB": [1, 0]}


def test_gate_delay_is_measured_against_plain_vad_and_an_open_gate_adds_nothing() -> None:
    run = SystemRun(
        vad_starts=[1096, 9096],  # the third turn: the VAD was already on (background) when the caller began
        gate_starts=[(1128, 1000), (9400, 9000), (15800, 15700)],  # turn 2: 272 ms late; turn 3: open already
        gate_ends=[1900],
    )
    t = Tally()
    score_call(_labels(), run, t)
    s = summarize("gate", t)
    # turn 1: plain VAD reports at 1096 but never before start + 128 ms = 1128 -> 0; turn 2: 9400 - 9128
    assert t.gate_delays == [0.0, pytest.approx(272.0), 0.0]
    assert s.gate_delayed_starts == 1 and s.gate_delay_max_ms == pytest.approx(272.0)
    never = SystemRun(vad_starts=[1096], gate_starts=[], gate_ends=[])
    t2 = Tally()
    score_call(_labels(), never, t2)
    assert t2.gate_missed == 3


def test_a_tentative_opening_pending_when_the_caller_begins_delays_nothing_and_a_revoked_one_does() -> None:
    """The bot paused on the TV just before turn 2 (a tentative opening still pending at the caller's VAD
    report): that turn is heard at once however late the confirmation comes. Turn 3's tentative opening
    was revoked before the caller began, so its late confirmation counts in full."""
    run = SystemRun(
        vad_starts=[1096, 9096, 16096],
        gate_tentatives=[(1096, 1000), (8500, 8400), (15500, 15400), (16900, 16000)],
        gate_starts=[(1150, 1000), (9900, 8400), (17000, 16000)],
        gate_ends=[1900, 9950, 17050],
    )
    t = Tally()
    score_call(_labels(), run, t)
    assert t.gate_delays == [0.0, 0.0, pytest.approx(16900 - 16128)]
    assert summarize("gate", t).gate_delayed_starts == 1


def test_a_tentative_opening_pending_when_the_caller_begins_but_revoked_does_not_make_the_turn_heard() -> None:
    """The bot paused on the TV just before turns 2 and 3, but both openings were revoked during the turn
    (the bot resumed over the caller): turn 2 is heard at the later opening that was confirmed, turn 3,
    never confirmed, was never heard (all of it taken for background)."""
    run = SystemRun(
        vad_starts=[1096, 9096, 16096],
        gate_tentatives=[(1096, 1000), (8900, 8800), (9700, 9600), (15900, 15800)],
        gate_starts=[(1150, 1000), (9800, 9600)],
        gate_ends=[1900, 9950],
    )
    t = Tally()
    score_call(_labels(), run, t)
    assert t.gate_delays == [0.0, pytest.approx(9700 - 9128)]
    assert t.gate_missed == 1


def test_a_background_talker_is_never_the_callers_own_voice() -> None:
    _audio, labels = build_call("test", 26, seed=9)  # a flite 'kal' caller behind a TV
    assert labels["voice"] == "flite:kal" and labels["condition"] == "tv"
    voices = {b["bg_voice"] for b in labels["background"]}
    assert voices and "flite:kal16" not in voices and "flite:kal" not in voices


def test_real_recordings_become_background_talkers(tmp_path) -> None:
    rec = tmp_path / "recordings"
    rec.mkdir()
    voice = synth.speech("Hi, you have reached Ari, please leave a message after the tone.", voice="en-us+f2")
    pcm = to_int16(np.concatenate([np.zeros(4000, np.float32), voice * (0.1 / (synth.active_rms(voice) + 1e-9))]))
    save_wav(rec / f"{REAL_SPEAKERS['test'][0]}.wav", pcm)
    _audio, labels = build_call("test", 26, seed=9, real_dir=rec)
    assert "real:" in {b["bg_voice"] for b in labels["background"]}
    with pytest.raises(ValueError, match="not a directory"):
        build_set(tmp_path / "out", "test", 1, real_dir=tmp_path / "missing")


def test_gate_eval_runs_the_gate_beside_plain_vad(tmp_path) -> None:
    build_set(tmp_path, "test", 1, seed=9)  # call 0: a café behind the caller
    data = load_labels(tmp_path)
    calls = [load_call(tmp_path, n, lab) for n, lab in data["files"].items()]
    report = evaluate_gate(calls, GateParams(), {})
    assert set(report.summaries) == {"plain_vad", "gate"}
    assert report.summaries["gate"].turns == len(data["files"]["test_0000.wav"]["turns"])
    assert report.summaries["gate"].gate_missed_turns == 0
    text = format_report(report)
    assert "plain_vad" in text and "gate" in text


def test_gate_eval_tune_searches_the_extra_space_given_on_the_command_line(tmp_path, monkeypatch, capsys) -> None:
    import json
    import sys

    from turn_eval import gate_eval

    build_set(tmp_path, "test", 1, seed=9)
    monkeypatch.setattr(sys, "argv", ["gate_eval", str(tmp_path), "--tune", "2", "--seed", "3",
                                      "--space", '{"pitch_weight": [0.1, 0.3]}'])
    gate_eval.main()
    best = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("best:"))[5:])
    assert set(best) == set(gate_eval.TUNE_SPACE) | {"pitch_weight"}


def test_gate_cues_are_recorded_at_closed_gate_decisions_and_labelled_from_the_call(tmp_path) -> None:
    from turn_eval.gate_cues import fit_logistic, record

    build_set(tmp_path, "test", 1, seed=9)
    data = load_labels(tmp_path)
    calls = [load_call(tmp_path, n, lab) for n, lab in data["files"].items()]
    rows = record(calls, GateParams(pitch_weight=0.5), {})
    assert rows and {r["y"] for r in rows} <= {1, -1}
    assert all(r["since_onset_ms"] >= 0 for r in rows)
    caller = [r for r in rows if r["y"] == 1]
    assert caller and all(any(s["start_ms"] - 64 <= r["t0"] + 16 < s["end_ms"] for t in data["files"]["test_0000.wav"]["turns"]
                              for s in t["segments"]) for r in caller)
    # the fitter finds the sign of a cue that separates the classes
    x = np.r_[np.linspace(-5, -1, 50), np.linspace(1, 5, 50)][:, None]
    y = np.r_[np.zeros(50), np.ones(50)]
    w = fit_logistic(x, y)
    assert w[0] > 0


def test_explain_lists_the_background_the_gate_let_in_and_the_caller_start_it_missed() -> None:
    from turn_eval.gate_eval import explain
    from turn_eval.runner import CallInputs

    def at(text: str, voice: str, dbfs: float) -> np.ndarray:
        x = synth.speech(text, voice=voice)
        return to_int16(x * (10 ** (dbfs / 20) / (synth.active_rms(x) + 1e-12)))

    parts, labels = [], {"duration_ms": 0.0, "condition": "tv", "turns": [], "background": []}
    t = 0.0

    def add(pcm: np.ndarray, kind: str | None = None) -> None:
        nonlocal t
        ms = len(pcm) / 8.0
        if kind == "caller":
            seg = {"text": "words", "start_ms": t, "end_ms": t + ms}
            labels["turns"].append({"start_ms": t, "end_ms": t + ms, "pauses": [], "segments": [seg]})
        elif kind == "tv":
            labels["background"].append({"kind": "tv", "start_ms": t, "end_ms": t + ms, "rel_db": -4.0,
                                         "bg_voice": "espeak-ng:en-gb+f3"})
        parts.append(pcm)
        t += ms

    silence = np.zeros(8000 * 3, np.int16)
    add(silence[:4000])
    add(at("Hello, this is Maria speaking, I am calling about my bill.", "en-us+m3", -20), "caller")
    add(silence)
    add(at("And now the weather for the weekend.", "en-gb+f3", -24), "tv")  # level-close: the gate opens
    add(silence)
    add(at("Sorry, could you say that again?", "en-us+m3", -34), "caller")  # too soft: never opened
    add(silence)
    pcm = np.concatenate(parts)
    labels["duration_ms"] = t
    win = pcm[: len(pcm) // 256 * 256].reshape(-1, 256).astype(np.float32)
    conf = (np.sqrt((win**2).mean(axis=1)) > 32768 * 10 ** (-50 / 20)).astype(np.float32)  # an oracle VAD
    lines = explain([CallInputs("c.wav", pcm, labels, conf, {})], GateParams(), {})
    assert any(ln.startswith("c.wav background tv") and "background level not learned" in ln for ln in lines)
    assert any(ln.startswith("c.wav caller turn 1") and "never opened" in ln for ln in lines)
    assert not any("caller turn 0" in ln for ln in lines)  # the first turn opened at once
    assert lines[-1] == "background segments opened on: 1, 1 of them before any background level was learned"


def test_tune_tries_the_base_first_and_returns_the_best_trials_parameters(tmp_path) -> None:
    from turn_eval.gate_eval import TUNE_SPACE, tune_gate, tune_objective

    build_set(tmp_path, "test", 1, seed=9)
    data = load_labels(tmp_path)
    calls = [load_call(tmp_path, n, lab) for n, lab in data["files"].items()]
    base = GateParams(confirm_ms=870.0, tentative_db=3.0, confirm_windows=2)
    best, lines = tune_gate(calls, base, {}, trials=3)
    assert len(lines) == 3 and lines[0].startswith("trial 0:")
    assert '"confirm_ms": 870.0' in lines[0]  # the base is trial 0
    scores = [float(line.split("objective ")[1].split(",")[0]) for line in lines]
    assert tune_objective(evaluate_gate(calls, best, {}).summaries["gate"]) == pytest.approx(min(scores), abs=0.06)
    assert all(lo <= getattr(best, k) <= hi for k, (lo, hi) in TUNE_SPACE.items())


def test_a_turn_start_plain_vad_itself_heard_late_is_not_charged_to_the_gate() -> None:
    """Turn 2's first word (9000-9400 ms) was missed by the VAD (music over it); plain VAD first reported
    the caller in the second word, at 9700 ms, and the gate, after the VAD, paused the bot with it: the
    gate added nothing. Turn 3 began while the VAD was still on background, so the caller is due at
    start + 128 ms and the gate's 400 ms counts."""
    labels = _labels()
    labels["turns"][1]["segments"] = [{"text": "well", "start_ms": 9000, "end_ms": 9400},
                                      {"text": "okay", "start_ms": 9600, "end_ms": 10000}]
    run = SystemRun(
        vad_starts=[1096, 9700, 15500],
        vad_ends=[1900, 9950],  # the VAD segment from 15500 (background) is still on when turn 3 begins
        gate_tentatives=[(1096, 1000), (9700, 9600), (16528, 16000)],
        gate_starts=[(1150, 1000), (9800, 9600), (16700, 16000)],
        gate_ends=[1900, 9950, 17050],
    )
    t = Tally()
    score_call(labels, run, t)
    assert t.gate_delays == [0.0, 0.0, pytest.approx(16528 - 16128)]
    assert plain_vad_hears(labels["turns"][1], run) == 9700
    assert plain_vad_hears(labels["turns"][2], run) == 16128


def test_gate_eval_bad_params_space_workflow_or_folder_say_so_without_a_traceback(tmp_path, monkeypatch) -> None:
    import sys

    from turn_eval import gate_eval

    (tmp_path / "labels.json").write_text('{"files": {}}')
    cases = [
        ([str(tmp_path / "nope")], "no labels.json"),
        ([str(tmp_path)], "lists no files"),
        ([str(tmp_path), "--workflow", "nope"], "no listen preset for workflow 'nope'"),
        ([str(tmp_path), "--params", "{bad"], "--params: not valid JSON"),
        ([str(tmp_path), "--params", "[1]"], "--params: want a JSON object"),
        ([str(tmp_path), "--params", '{"nope": 1}'], "--params: unknown gate parameter"),
        ([str(tmp_path), "--params", '{"open_offset_db": null}'], "--params:"),
        ([str(tmp_path), "--tune", "1", "--space", "{bad"], "--space: not valid JSON"),
        ([str(tmp_path), "--tune", "1", "--space", '{"nope": [0, 1]}'], "--space: unknown gate parameter"),
        ([str(tmp_path), "--tune", "1", "--space", '{"pitch_weight": 1}'], "wants [low, high]"),
        ([str(tmp_path), "--tune", "1", "--space", '{"pitch_weight": [3, 1]}'], "low < high"),
        ([str(tmp_path), "--tune", "-1"], "--tune must be >= 0"),
    ]
    for argv, needle in cases:
        monkeypatch.setattr(sys, "argv", ["gate_eval", *argv])
        with pytest.raises(SystemExit) as e:
            gate_eval.main()
        assert needle in str(e.value.code), (argv, e.value.code)
