"""Generalization folds never train and test on the same voice family or the same real greeting."""

from __future__ import annotations

import numpy as np
import pytest

from amd_model.tools import folds


def _metas() -> list[dict]:
    voices = [
        "espeak-ng:en-us+f1 p40 s160",
        "flite:kal pitch+10c tempo1.00",
        "asterisk:allison pitch+0c tempo1.00",
        "none",
    ] + [f"real:g{k:02d}.wav pitch+0c tempo1.00" for k in range(10)]
    rng = np.random.default_rng(0)
    metas = []
    for i in range(400):
        v = voices[i % len(voices)]
        metas.append({"voice": v, "split": str(rng.choice(["train", "train", "train", "val", "test"]))})
    return metas


def test_family_and_real_file_are_read_from_the_voice_field():
    assert folds.family({"voice": "espeak-ng:en-gb+m3 p50 s150"}) == "espeak"
    assert folds.family({"voice": "flite:slt pitch-20c tempo0.95"}) == "flite"
    assert folds.family({"voice": "asterisk:allison"}) == "asterisk"
    assert folds.family({"voice": "none"}) == "none"
    assert folds.family({}) == "none"
    assert folds.real_file({"voice": "real:Ari_Voicemail.wav pitch+0c tempo1.00"}) == "Ari_Voicemail.wav"
    assert folds.real_file({"voice": "flite:kal"}) is None


def test_a_family_fold_has_no_call_of_that_family_in_training_or_selection():
    metas = _metas()
    real = [f"g{k:02d}.wav" for k in range(10)]
    fs = {f.name: f for f in folds.make_folds(metas, real, cv=5)}
    assert set(fs) == {
        folds.SYNTH_SPLIT,
        "without espeak",
        "without flite",
        "without asterisk",
        "without real",
        *(f"real cv {k}/5" for k in range(1, 6)),
    }  # no piper voice in these calls: no piper fold
    for fam in ("espeak", "flite", "asterisk"):
        f = fs[f"without {fam}"]
        assert f.test and all(folds.family(metas[int(k[5:])]) == fam for k in f.test)
        assert not [i for i in f.train_ids + f.val_ids if folds.family(metas[i]) == fam]
        assert {folds.family(metas[i]) for i in f.train_ids} >= {"none"}  # no-voice calls always train
    f = fs["without real"]
    assert sorted(f.test) == sorted(f"real:{r}" for r in real)
    assert not [i for i in f.train_ids + f.val_ids if folds.family(metas[i]) == "real"]


def test_real_cv_folds_partition_the_greetings_and_drop_their_calls_from_training():
    metas = _metas()
    real = [f"g{k:02d}.wav" for k in range(10)]
    cv = [f for f in folds.make_folds(metas, real, cv=5) if f.kind == "real_cv"]
    tested = [k for f in cv for k in f.test]
    assert sorted(tested) == sorted(f"real:{r}" for r in real)  # each greeting tested exactly once
    for f in cv:
        held = {k[5:] for k in f.test}
        used = {folds.real_file(metas[i]) for i in f.train_ids + f.val_ids} - {None}
        assert used and not used & held
        assert used | held == set(real)  # the other greetings do train


def test_the_synthetic_split_fold_tests_only_test_split_calls_without_real_greetings():
    metas = _metas()
    f = next(f for f in folds.make_folds(metas, ["g00.wav"], cv=2) if f.kind == "split")
    ids = [int(k[5:]) for k in f.test]
    assert ids and all(metas[i]["split"] == "test" and folds.family(metas[i]) != "real" for i in ids)
    assert not set(ids) & set(f.train_ids + f.val_ids)


def test_run_folds_refuses_a_corpus_whose_real_greetings_are_split(tmp_path):
    (tmp_path / "meta.jsonl").write_text('{"voice": "none", "split": "train"}\n')
    (tmp_path / "corpus.json").write_text('{"seed": 1, "n": 1, "real_pool": "split"}')
    with pytest.raises(ValueError, match="real-pool all"):
        folds.run_folds(tmp_path, tmp_path, [], budget=folds.Budget(minutes=0.1, max_epochs=1), progress=False)
