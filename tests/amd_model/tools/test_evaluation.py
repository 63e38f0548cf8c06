"""`callgate eval` plumbing with a fake model: labels + meta are read, both systems run on the same
files, traces are written in the live format and replay to the reported verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amd_model.tools.evaluation import (
    evaluate_dir,
    evaluate_real_greetings,
    format_real_report,
    format_report,
    latency_ms,
    read_labels,
    read_real_greetings,
)
from amd_model.traces import load_traces, replay_trace
from callgate.audio import load_audio, save_wav
from callgate.cli import main
from processors.amd_decision import Verdict, load_presets

CLASSES = ("none", "human", "machine", "ivr", "carrier_intercept")


class LoudnessModel:
    """Stands in for AmdModel.run: 'human' after speech then 500 ms of quiet, 'machine' after 1.5 s of
    speech; 'none' before either."""

    classes = CLASSES

    def run(self, pcm: np.ndarray) -> np.ndarray:
        n = pcm.size // 800
        out = np.full((n, 5), 0.01, dtype=np.float32)
        loud_steps = quiet_run = 0
        verdict = 0
        for i in range(n):
            loud = np.abs(pcm[i * 800 : (i + 1) * 800].astype(np.float32)).mean() > 300
            loud_steps += loud
            quiet_run = 0 if loud else quiet_run + 1
            if not verdict and loud_steps >= 15:
                verdict = 2
            elif not verdict and loud_steps and quiet_run >= 5:
                verdict = 1
            out[i, verdict] = 0.96
        return out


MESSAGE = Path(__file__).resolve().parents[3] / "pipelines" / "assets" / "default_message.ulaw"


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    quiet = lambda ms: rng.normal(0, 5, ms * 8).astype(np.int16)  # noqa: E731
    speech = load_audio(MESSAGE)  # real recorded speech, so Silero hears it
    save_wav(
        tmp_path / "h1.wav", np.concatenate([quiet(500), speech[:4000], quiet(3000)])
    )  # a 500 ms "hello"
    save_wav(tmp_path / "m1.wav", np.concatenate([quiet(400), speech[:32000], quiet(500)]))  # a 4 s greeting
    (tmp_path / "labels.csv").write_text(
        "file,label,beep_onset_ms,subtype\nh1.wav,human,,human_business\nm1.wav,machine,,vm\n"
    )
    meta = [{"file": "h1.wav", "speech_onset_ms": 500, "first_utterance_end_ms": 1000}]
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    return tmp_path


def test_read_labels_merges_meta(corpus: Path) -> None:
    calls = read_labels(corpus)
    assert [(c.file, c.label, c.subtype) for c in calls] == [
        ("h1.wav", "human", "human_business"),
        ("m1.wav", "machine", "vm"),
    ]
    assert calls[0].first_utterance_end_ms == 1000 and calls[1].speech_onset_ms is None


def test_eval_both_systems_and_traces(corpus: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    rep = evaluate_dir(corpus, workflow="default", model=LoudnessModel(), traces_dir=traces, progress=False)
    ours, ast = rep["callgate"], rep["asterisk"]
    assert ours["calls"] == ast["calls"] == 2
    assert ours["confusion"]["human"]["human"] == 1 and ours["confusion"]["machine"]["machine"] == 1
    assert ast["confusion"]["machine"]["machine"] == 1  # a 4 s greeting: LONGGREETING
    assert ours["business_pickups_human"] == {"n": 1, "rate": 1.0}
    lat = ours["latency_ms"]["human_after_utterance_end"]
    assert lat["n"] == 1 and 0 <= lat["p50"] <= 1500
    text = format_report(rep)
    assert "accuracy" in text and "asterisk" in text and "business pickups" in text
    # the saved traces replay to the verdicts the report counted, with VAD speech events in them
    dets = load_presets()["default"]
    by_id = {t.call_id: t for t in load_traces(traces)}
    assert set(by_id) == {"h1", "m1"}
    h1 = by_id["h1"]
    assert h1.label == "human" and h1.truth["first_utterance_end_ms"] == 1000
    vad = [e.event for e in h1.speech if not e.event.startswith("candidate")]
    assert vad[:2] == ["start", "end"]
    assert h1.speech[0].event == "candidate"  # the voice is reported before its start is confirmed
    assert replay_trace(h1, dets).label == h1.verdicts[0]["label"] == "human"


def test_latency_definitions() -> None:
    assert latency_ms(Verdict("human", 1, 1500, "d"), 500, 1100) == 400
    assert latency_ms(Verdict("machine", 1, 1500, "d"), 500, 1100) == 1000
    assert latency_ms(Verdict("unknown", 0, 6000, "t"), 500, 1100) is None


def test_cli_errors(tmp_path: Path) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert main(["eval", str(tmp_path)]) == 2  # no labels.csv


def test_real_greetings_report_splits_held_out_from_seen(tmp_path: Path) -> None:
    """Every WAV is a machine; the sorted even files are the ones the corpus mixes into training."""
    rng = np.random.default_rng(1)
    quiet = lambda ms: rng.normal(0, 5, ms * 8).astype(np.int16)  # noqa: E731
    speech = load_audio(MESSAGE)
    greeting = np.concatenate([quiet(600), speech[:32000], quiet(500)])  # a 4 s greeting
    hello = np.concatenate([quiet(600), speech[:4000], quiet(3000)])  # sounds like a pickup
    for name, pcm in (("a.wav", greeting), ("b.wav", greeting), ("c.wav", hello)):
        save_wav(tmp_path / name, pcm)
    (tmp_path / "index.csv").write_text("file,kind,duration_s\na.wav,personal_voicemail,5\nb.wav,business_prompt,5\n")
    calls = read_real_greetings(tmp_path)
    assert [(c.file, c.label, c.split) for c in calls] == [
        ("a.wav", "machine", "seen_in_training"),
        ("b.wav", "machine", "held_out"),
        ("c.wav", "machine", "seen_in_training"),
    ]
    assert calls[1].subtype == "business_prompt" and calls[2].subtype == "greeting"
    rep = evaluate_real_greetings(tmp_path, load_presets()["default"], model=LoudnessModel())
    ours = rep["callgate"]
    assert ours["all"]["n"] == 3 and ours["held_out"]["n"] == 1 and ours["seen_in_training"]["n"] == 2
    assert ours["all"]["machine"] == pytest.approx(2 / 3) and ours["all"]["verdicts"]["human"] == 1
    lat = ours["held_out"]["latency_after_onset_ms"]["p50"]
    assert lat is not None and 1000 <= lat <= 2500  # the fake calls machine after 1.5 s of speech
    text = format_real_report(rep)
    assert "held out from training (n=1)" in text and "asterisk" in text


def test_real_greetings_are_all_in_sample_for_a_model_refitted_on_them(tmp_path: Path) -> None:
    """A model whose heads were refitted on every greeting (amd.json `head_refit`) holds none of them
    out, and the report says its figure is fit, not generalization."""
    rng = np.random.default_rng(2)
    speech = load_audio(MESSAGE)
    for name in ("a.wav", "b.wav"):
        save_wav(tmp_path / name, np.concatenate([rng.normal(0, 5, 4800).astype(np.int16), speech[:32000]]))
    model = LoudnessModel()
    model.meta = {"version": "9.9.9", "head_refit": {"from_version": "9.9.8", "real_greetings": 2}}
    rep = evaluate_real_greetings(tmp_path, load_presets()["default"], model=model)
    assert rep["in_sample"] and rep["callgate"]["held_out"]["n"] == 0
    assert rep["callgate"]["seen_in_training"]["n"] == 2
    assert "in-sample: model 9.9.9" in format_real_report(rep)
    assert [c.split for c in read_real_greetings(tmp_path)] == ["seen_in_training", "held_out"]  # default split
