"""Head refit: the states and heads it reads reproduce the shipped graph, and an export carries new heads."""

from __future__ import annotations

import numpy as np
import pytest

from amd_model.runtime import AmdModel
from amd_model.tools import head_refit
from amd_model.tools.train import call_features
from callgate import synth
from callgate.audio import SAMPLE_RATE, to_int16


def _call() -> np.ndarray:
    speech = synth.harmonic_vowel(160.0, 1.5, seed=2)
    x = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech, np.zeros(3 * SAMPLE_RATE, np.float32)])
    return to_int16(x + synth.white_noise(x.size / SAMPLE_RATE, rms=0.001, seed=3)[: x.size])


def test_the_gru_states_and_heads_reproduce_the_shipped_graphs_probabilities():
    model = AmdModel()
    pcm = _call()
    heads = head_refit.load_heads(head_refit.SHIPPED)
    assert heads.w.shape[0] == 3 and heads.w.shape[1] == len(model.classes)
    states = head_refit.gru_states(model, [call_features(pcm)])[0]
    np.testing.assert_allclose(heads.probs(states), model.run(pcm), atol=2e-3)


def test_a_batch_of_calls_of_different_lengths_gets_each_calls_own_states():
    model = AmdModel()
    a, b = _call(), _call()[: 2 * SAMPLE_RATE]
    fa, fb = call_features(a), call_features(b)
    together = head_refit.gru_states(model, [fa, fb])
    alone = head_refit.gru_states(model, [fb])[0]
    assert together[1].shape == alone.shape == (fb.shape[0], model.hidden)
    np.testing.assert_allclose(together[1].astype(np.float32), alone.astype(np.float32), atol=1e-3)


def test_an_exported_graph_runs_the_new_heads(tmp_path):
    pytest.importorskip("onnx")
    heads = head_refit.load_heads(head_refit.SHIPPED)
    shifted = head_refit.Heads(heads.w, heads.b + np.array([0, 2.0, 0, 0, 0], np.float32))  # favour "human"
    out = tmp_path / "amd.onnx"
    head_refit.export(head_refit.SHIPPED, out, shifted, "test-heads", {"l2": 0.5})
    new, old = AmdModel(out), AmdModel()
    pcm = _call()
    states = head_refit.gru_states(old, [call_features(pcm)])[0]
    np.testing.assert_allclose(new.run(pcm), shifted.probs(states), atol=2e-3)
    assert new.meta["version"] == "test-heads"
    assert new.meta["head_refit"] == {"from_version": old.meta["version"], "l2": 0.5}  # where it came from
    assert new.meta["size_bytes"] == out.stat().st_size
    assert (new.run(pcm)[:, 1] > old.run(pcm)[:, 1]).all()


def test_fitting_moves_the_heads_towards_the_targets_and_the_pull_holds_them_back():
    pytest.importorskip("torch")
    model = AmdModel()
    heads = head_refit.load_heads(head_refit.SHIPPED)
    states = head_refit.gru_states(model, [call_features(_call())])[0]
    y = np.full(states.shape[0], 2, np.int64)  # say it is all "machine"
    w = np.ones(states.shape[0], np.float32)
    loose = head_refit.fit_heads([states], [y], [w], heads, l2=0.0, steps=60, lr=5e-2)
    tight = head_refit.fit_heads([states], [y], [w], heads, l2=10.0, steps=60, lr=5e-2)
    before, after_loose, after_tight = (h.probs(states)[:, 2].mean() for h in (heads, loose, tight))
    assert after_loose > max(before, 0.9)
    assert before <= after_tight < after_loose


def test_cross_validation_by_group_scores_each_clip_with_heads_that_never_saw_its_group():
    heads = head_refit.load_heads(head_refit.SHIPPED)
    fitted: dict[str, head_refit.Heads] = {}

    def fit_without(group: str) -> head_refit.Heads:
        fitted[group] = head_refit.Heads(heads.w, heads.b + len(fitted))
        return fitted[group]

    group_of = {"a1": "alsa", "a2": "alsa", "b1": "an4", "c1": "librivox"}
    out = head_refit.heads_by_group(list(group_of), group_of, fit_without)
    assert sorted(fitted) == ["alsa", "an4", "librivox"]
    assert all(out[n] is fitted[g] for n, g in group_of.items())
    assert out["a1"] is out["a2"] and out["a1"] is not out["b1"]


def test_recording_sets_are_dealt_into_k_folds_so_no_fit_hears_a_held_out_speaker():
    sets = [f"s{i}" for i in range(7)]
    folds = head_refit.human_speaker_folds(sets, 3)
    assert len(set(folds.values())) == 3
    assert sorted(len(f.split("+")) for f in set(folds.values())) == [2, 2, 3]
    assert all(s in folds[s].split("+") for s in sets)  # a set's fold names it, so held out together
    assert head_refit.human_speaker_folds(sets, 0) == {s: s for s in sets}
    assert head_refit.human_speaker_folds(sets, 9) == {s: s for s in sets}


def test_a_missing_corpus_is_a_one_line_error_not_a_traceback(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        head_refit.main([str(tmp_path), "--humans", str(tmp_path)])
    assert e.value.code == 2
    assert "meta.jsonl: not found; expected a corpus" in capsys.readouterr().err
