"""encoder_probe: Pipecat's Smart-Turn encoder cut to a short window, and the leave-one-family-out
linear probe that compares it with the AMD net's log-mels."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

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
        with wave.open(str(tmp_path / f), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(_voice(i, 110 + 60 * (m["label"] == "machine")).tobytes())
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


def test_the_fused_head_sees_each_embedding_from_the_step_that_passes_onset_plus_t() -> None:
    from amd_model.tools.encoder_fusion import _avail

    e1, e2 = np.ones(4, np.float32), 2 * np.ones(4, np.float32)
    e, flags = _avail(40, 500.0, [1.0, 2.0], [e1, e2], 4)
    # onset 0.5 s: the 1 s embedding from the step ending at 1.5 s (index 14), the 2 s one from index 24
    assert (e[:14] == 0).all() and (e[14:24] == 1).all() and (e[24:] == 2).all()
    assert flags[13].tolist() == [0, 0] and flags[14].tolist() == [1, 0] and flags[24].tolist() == [1, 1]
    none, f0 = _avail(10, None, [1.0], [e1], 4)
    assert not none.any() and not f0.any()


def test_an_untrained_fused_head_is_the_nets_own_head() -> None:
    torch = pytest.importorskip("torch")
    from amd_model.tools.encoder_fusion import FusedHead
    from amd_model.tools.net import AmdNet

    net = AmdNet(5, hidden=16)
    head = FusedHead(net, dim=8, n_times=2)
    h = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    e = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    f = np.ones((6, 2), np.float32)
    with torch.no_grad():
        own = torch.softmax(net.head(torch.from_numpy(h)), -1).numpy()
    assert np.allclose(head.probs(h, e, f), own, atol=1e-6)


def _m(acc: float, human: float, biz: float, p50: float) -> dict:
    return {"accuracy": acc, "per_class": {"human": {"recall": human}},
            "business_pickups_human": {"rate": biz}, "latency_ms": {"machine_after_speech_onset": {"p50": p50}}}


def test_the_repicked_preset_is_the_fastest_that_keeps_the_nets_humans_and_business_pickups() -> None:
    from amd_model.tools.encoder_fusion import pick_preset

    base = _m(0.90, 0.95, 0.80, 3000)
    scored = [("fast but loses business", _m(0.91, 0.95, 0.70, 900)),
              ("keeps all", _m(0.90, 0.95, 0.79, 1500)),
              ("keeps all, slower", _m(0.92, 0.96, 0.80, 2500))]
    assert pick_preset(scored, base) == "keeps all"
    assert pick_preset(scored[:1], base) == "fast but loses business"  # none qualifies: the most accurate


def test_the_preset_grid_varies_only_the_early_machine_detectors() -> None:
    from amd_model.tools.encoder_fusion import preset_grid
    from processors.amd_decision import load_presets

    dets = load_presets()["default"]
    grid = preset_grid(dets)
    assert len(grid) == 36
    off = [d for n, d in grid if "fast off" in n]
    assert off and all("machine_fast" not in {x.name for x in ds} for ds in off)
    untouched = {d.name: d for d in dets if d.name not in ("machine_talking", "machine_fast", "machine")}
    assert all(untouched[x.name] == x for _n, ds in grid for x in ds if x.name in untouched)


def test_an_untuned_joint_net_is_the_net_itself_and_fine_tuning_changes_it() -> None:
    torch = pytest.importorskip("torch")
    from amd_model.tools.encoder_fusion import JointNet, train_joint
    from amd_model.tools.net import AmdNet

    torch.manual_seed(0)
    net = AmdNet(5, hidden=16).eval()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((12, 10, 40)).astype(np.float32) for _ in range(4)]
    es = [rng.standard_normal((12, 8)).astype(np.float32) for _ in range(4)]
    fl = [np.r_[np.zeros((4, 1)), np.ones((8, 1))].astype(np.float32) for _ in range(4)]
    with torch.no_grad():
        own = torch.softmax(net(torch.from_numpy(feats[0])[None])[0][0], -1).numpy()
    assert np.allclose(JointNet(net, 8, 1).probs(feats[0], es[0], fl[0]), own, atol=1e-5)
    ys = [np.r_[np.zeros(4), np.full(8, 2)].astype(np.int64) for _ in range(4)]
    tuned = train_joint(net, feats, es, fl, ys, [np.ones(12, np.float32)] * 4, epochs=3, lr=1e-2, batch=2)
    after = tuned.probs(feats[0], es[0], fl[0])
    assert after[-1, 2] > own[-1, 2]  # it learned the target class on its own training calls
    assert np.allclose(torch.softmax(net(torch.from_numpy(feats[0])[None])[0][0], -1).detach().numpy(), own)  # net untouched


def test_the_scalar_path_hands_the_model_only_the_folds_probe_logit() -> None:
    from amd_model.tools.encoder_fusion import _probe_logits

    rng = np.random.default_rng(0)
    metas = [{"label": "machine" if i % 2 else "human"} for i in range(40)]
    emb = {i: [rng.standard_normal(6) + (i % 2), None] for i in range(40)}
    test = {"call:0": (500.0, [np.ones(6), np.zeros(6)]), "real:x": (None, [None, None])}
    f_emb, f_test, dim = _probe_logits(emb, test, list(range(30)), metas, 2)
    assert dim == 1 and f_emb[1][0].shape == (1,) and f_emb[1][1] is None
    assert f_test["real:x"] == (None, [None, None]) and f_test["call:0"][1][0].shape == (1,)
    machines = np.mean([f_emb[i][0][0] for i in range(30, 40) if i % 2])
    humans = np.mean([f_emb[i][0][0] for i in range(30, 40) if not i % 2])
    assert machines > humans  # the held-out calls' logits follow their class


def test_the_probe_cv_never_trains_on_the_twin_of_a_greeting_it_tests(monkeypatch) -> None:
    from amd_model.tools import encoder_probe

    metas = _metas()
    seen: list[set[int]] = []
    monkeypatch.setattr(encoder_probe, "fit_logistic", lambda X, y, l2: seen.append({int(v) for v in X[:, 0]}))
    tested: list[set[int]] = []
    monkeypatch.setattr(encoder_probe, "predict", lambda model, X: (tested.append({int(v) for v in X[:, 0]}),
                                                                    np.zeros(len(X), bool))[1])
    X = np.arange(len(metas), dtype=float)[:, None]
    twins = [["greeting0.wav", "greeting1.wav"], ["greeting2.wav", "greeting9.wav"]]
    probe_folds(X, metas, groups=twins + [["unused.wav"]])
    index = {f"greeting{k}.wav": 120 + k for k in range(10)}
    cv = list(zip(seen[-5:], tested[-5:], strict=True))  # the last five fits are the CV folds
    assert sorted(i for _, te in cv for i in te) == sorted(index.values())
    for tr, te in cv:
        for a, b in twins:
            assert (index[a] in te) == (index[b] in te)
            assert not {index[a], index[b]} & tr or not {index[a], index[b]} & te


def test_cross_fitted_training_logits_come_from_probes_that_never_saw_the_call(monkeypatch) -> None:
    from amd_model.tools import encoder_fusion, encoder_probe

    fits: list[set[int]] = []
    real_fit = encoder_probe.fit_logistic

    def spy(X: np.ndarray, y: np.ndarray, l2: float = 10.0):  # noqa: ANN202
        fits.append({int(round(v)) for v in X[:, 0]})
        return real_fit(X, y, l2)

    monkeypatch.setattr(encoder_probe, "fit_logistic", spy)
    rng = np.random.default_rng(0)
    metas = [{"label": "machine" if i % 2 else "human"} for i in range(50)] + [{"label": "ivr"}] * 5
    emb = {i: [np.r_[i, rng.standard_normal(3) + (i % 2)]] for i in range(55)}
    out = encoder_fusion._crossfit_logits(emb, list(range(55)), metas, 1, k=5)
    assert sorted(out) == list(range(50))  # every human/machine training call, nothing else
    assert len(fits) == 5 and all(len(f) == 40 for f in fits)
    held = [set(range(50)) - f for f in fits]
    assert sorted(i for h in held for i in h) == list(range(50))  # each call held out by exactly one probe
    assert all(out[i][0].shape == (1,) for i in out)


def test_a_net_with_extra_inputs_reads_them_and_runs_without_them() -> None:
    torch = pytest.importorskip("torch")
    from amd_model.tools.encoder_fusion import ScratchNet
    from amd_model.tools.net import AmdNet

    torch.manual_seed(0)
    net = AmdNet(5, hidden=16, n_extra=2).eval()
    feats = np.random.default_rng(0).standard_normal((12, 10, 40)).astype(np.float32)
    e = np.r_[np.zeros((6, 1)), np.full((6, 1), 30.0)].astype(np.float32)  # a logit of 30 is clipped to 10
    f = np.r_[np.zeros((6, 1)), np.ones((6, 1))].astype(np.float32)
    assert ScratchNet.inputs(e, f)[-1].tolist() == [2.0, 1.0]
    with_logit = ScratchNet(net).probs(feats, e, f)
    without = ScratchNet(net).probs(feats, np.zeros_like(e), np.zeros_like(f))
    assert np.allclose(with_logit[:6], without[:6], atol=1e-6) and not np.allclose(with_logit[6:], without[6:])
    with torch.no_grad():
        plain = torch.softmax(net(torch.from_numpy(feats)[None])[0][0], -1).numpy()  # no extra given: zeros
    assert np.allclose(plain, without, atol=1e-6)
