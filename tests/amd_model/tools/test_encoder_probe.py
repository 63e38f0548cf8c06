"""encoder_probe: Pipecat's Smart-Turn encoder cut to a short window, and the leave-one-family-out
linear probe that compares it with the AMD net's log-mels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from amd_model.tools.encoder_probe import embed, encoder_session, fit_logistic, main, predict, probe_folds


def _voice(seed: int, f0: float, seconds: float = 2.5) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * env
    return (x / np.abs(x).max() * 8000).astype(np.int16)


def test_the_cut_encoder_embeds_a_short_window_deterministically() -> None:
    a, b = _voice(0, 120), _voice(1, 220)
    ea = embed(a)
    assert ea.shape == (768,) and np.isfinite(ea).all()
    assert np.array_equal(ea, embed(a))
    assert not np.allclose(ea, embed(b), atol=1e-3)
    assert encoder_session(2.0).get_inputs()[0].shape[2] == 200  # 2 s of Whisper mel frames


def test_a_window_longer_than_the_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        encoder_session(9.0)


def _metas() -> list[dict]:
    out = []
    for i in range(120):
        fam = ("espeak-ng", "flite", "asterisk")[i % 3]
        out.append({"label": "machine" if i % 2 else "human", "voice": f"{fam}:v{i}", "subtype": "x"})
    for i in range(10):
        out.append({"label": "machine", "voice": f"real:greeting{i}.wav tempo1.0", "subtype": "vm_real"})
    return out


def test_a_separating_feature_scores_every_held_out_family_and_noise_scores_chance() -> None:
    metas = _metas()
    y = np.array([m["label"] == "machine" for m in metas], dtype=float)
    rng = np.random.default_rng(0)
    good = np.c_[y + 0.1 * rng.standard_normal(len(y)), rng.standard_normal((len(y), 3))]
    res = probe_folds(good, metas)
    assert set(res) == {"without espeak", "without flite", "without asterisk", "without real",
                        "real greetings, 5-fold CV"}
    assert all(r["accuracy"] == 1.0 for r in res.values())
    assert res["real greetings, 5-fold CV"]["n"] == 10  # every real call tested once, by file
    noise = probe_folds(rng.standard_normal((len(y), 4)), metas)
    assert 0.25 < noise["without espeak"]["accuracy"] < 0.75


def test_the_logistic_probe_fits_a_linear_rule() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 2))
    y = X[:, 0] - 0.5 * X[:, 1] > 0.2
    assert (predict(fit_logistic(X, y, l2=0.1), X) == y).mean() > 0.97


def test_cli_embeds_a_corpus_and_prints_both_representations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metas = []
    for i, m in enumerate(_metas()[:120:5] + _metas()[-5:]):
        f = f"calls/{i:03d}.wav"
        (tmp_path / "calls").mkdir(exist_ok=True)
        sf.write(tmp_path / f, _voice(i, 110 + 60 * (m["label"] == "machine")), 8000, subtype="PCM_16")
        metas.append({**m, "file": f, "speech_onset_ms": 200})
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(m) for m in metas))
    assert main([str(tmp_path), "--times", "1.0", "--cache", str(tmp_path / "e.npz")]) == 0
    out = capsys.readouterr().out
    assert "encoder@1s" in out and "logmel@1s" in out and "without flite" in out
    assert (tmp_path / "e.npz").is_file()
    assert main([str(tmp_path / "nope")]) == 2


def test_the_voice_detector_fires_machine_on_the_probe_column_only_while_talking() -> None:
    from amd_model.tools.encoder_probe import VOICE, encoder_detector

    d = encoder_detector(0.9, 1000)
    assert d.label == "machine" and d.classes == [VOICE] and d.threshold == 0.9
    assert d.from_speech and d.min_talk_ms == 1000
    assert encoder_detector(0.5, None).min_talk_ms is None


def test_the_fold_table_prints_each_system_and_skips_single_cv_folds() -> None:
    from amd_model.tools.encoder_probe import format_fold_nets

    m = {"accuracy": 0.9, "latency_ms": {"machine_after_speech_onset": {"p50": 2040.0},
                                         "human_after_utterance_end": {"p50": None}},
         "business_pickups_human": {"rate": None}}
    rep = {"t_s": 2.0, "window_s": 2.0, "workflow": "default", "folds": [
        {"name": "without real", "kind": "family", "n": 38, "epochs": 15, "net": m, "net+voice(p>=0.9)": m},
        {"name": "real cv 1/5", "kind": "real_cv", "n": 8, "net": m},
    ]}
    text = format_fold_nets(rep)
    assert "without real (38)" in text and "net+voice(p>=0.9)" in text and "2040 ms" in text
    assert "real cv 1/5" not in text
