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
    assert folds.family({"voice": "festival:cmu_us_slt_arctic_hts pitch+80c tempo1.05"}) == "festival"
    assert folds.family({"voice": "festival:kal_diphone pitch-3c tempo0.91"}) == "festival"
    assert folds.family({"voice": "mbrola:us1 pitch+12c tempo1.00"}) == "mbrola"
    assert folds.family({"voice": "mbrola:en1-festival pitch+12c tempo1.00"}) == "mbrola"  # same diphones
    assert folds.family({"voice": "pico:en-GB pitch-200c tempo1.10"}) == "pico"
    assert folds.family({"voice": "piper:joe-us pitch+0c tempo1.00"}) == "piper"
    assert {"festival", "mbrola", "pico", "piper"} <= set(folds.FAMILIES)
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


def test_eval_folds_trains_and_tests_every_fold_end_to_end(tmp_path, monkeypatch, capsys):
    """A tiny real corpus, one short epoch per fold: the command runs every fold through the decision
    layer, prints the table beside the shipped model and the acceptance lines, and refuses a corpus
    whose real greetings are split."""
    import shutil

    pytest.importorskip("torch")
    if not (shutil.which("espeak-ng") and shutil.which("flite") and shutil.which("sox")):
        pytest.skip("needs espeak-ng, flite and sox (apt)")
    from amd_model.tools import corpus
    from amd_model.tools.corpus import greetings, system_tools
    from callgate.audio import load_audio, save_wav
    from callgate.cli import main
    from tests.amd_model.tools.test_evaluation import MESSAGE

    real = tmp_path / "real"
    real.mkdir()
    speech = load_audio(MESSAGE)
    rng = np.random.default_rng(3)
    for k in range(4):
        quiet = rng.normal(0, 5, 4800).astype(np.int16)
        save_wav(real / f"g{k}.wav", np.concatenate([quiet, speech[: 24000 + 4000 * k], quiet]))
    files = sorted(real.glob("*.wav"))
    monkeypatch.setattr(system_tools, "_piper_model", lambda: None)
    monkeypatch.setattr(greetings, "dev_greetings", lambda: corpus.dev_greetings_split(files))
    corpus.build(tmp_path / "c", 24, seed=3, workers=1, progress=False, real_pool="all")
    args = ["eval", str(tmp_path / "c"), "--folds", "--real", str(real), "--cv", "2"]
    args += ["--fold-minutes", "0.05", "--fold-epochs", "1", "--no-progress", "--report", str(tmp_path / "r.txt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "synthetic split" in out and "real cv 1/2" in out and "real cv, all folds" in out
    assert "NOT held out" in out and "acceptance (issue 11)" in out and "where each fold model errs" in out
    assert out.strip().endswith((tmp_path / "r.txt").read_text().strip())  # epoch lines come first
    assert len(list((tmp_path / "c" / "folds").glob("*.pt"))) >= 4  # one net per fold, kept for reruns

    corpus.build(tmp_path / "s", 2, seed=3, workers=1, progress=False)  # real_pool "split"
    assert main(["eval", str(tmp_path / "s"), "--folds", "--real", str(real)]) == 2
    assert "real-pool all" in capsys.readouterr().err


def _wav(path, x) -> None:
    import soundfile as sf

    sf.write(str(path), x, 8000, subtype="PCM_16")


def test_real_twins_groups_a_re_encoded_copy_of_a_recording_and_nothing_else(tmp_path):
    rng = np.random.default_rng(3)
    a, b = 0.3 * rng.standard_normal(8000), 0.3 * rng.standard_normal(8000)
    _wav(tmp_path / "a.wav", a)
    _wav(tmp_path / "a_copy.wav", a + 1e-3 * rng.standard_normal(8000))  # same audio, re-encoded
    _wav(tmp_path / "b.wav", b)  # same length, other audio
    _wav(tmp_path / "a_short.wav", a[:7000])  # other length
    groups = folds.real_twins(tmp_path, ["b.wav", "a_copy.wav", "a_short.wav", "a.wav"])
    assert sorted(groups) == [["a.wav", "a_copy.wav"], ["a_short.wav"], ["b.wav"]]


def test_real_cv_folds_hold_out_both_files_of_one_recording_together():
    metas = _metas()
    real = [f"g{k:02d}.wav" for k in range(10)]
    groups = [["g00.wav", "g07.wav"], ["g03.wav", "g04.wav"]] + [[r] for r in real if r not in
                                                                  ("g00.wav", "g07.wav", "g03.wav", "g04.wav")]
    cv = [f for f in folds.make_folds(metas, real, cv=5, groups=groups) if f.kind == "real_cv"]
    assert sorted(k for f in cv for k in f.test) == sorted(f"real:{r}" for r in real)
    for f in cv:
        held = {k[5:] for k in f.test}
        for g in groups[:2]:
            assert set(g) <= held or not set(g) & held  # a pair is tested together or not at all
        used = {folds.real_file(metas[i]) for i in f.train_ids + f.val_ids} - {None}
        assert not used & held
    with pytest.raises(ValueError, match="partition"):
        folds.make_folds(metas, real, cv=5, groups=[["g00.wav"]])


def test_fold_errors_names_the_weak_subtypes_and_the_commonest_wrong_verdicts():
    from amd_model.tools.folds import fold_errors

    m = {
        "accuracy_by_subtype": {"ivr_menu": {"n": 56, "accuracy": 13 / 56}, "human_short": {"n": 68, "accuracy": 1.0},
                                "vm_carrier": {"n": 143, "accuracy": 115 / 143}},
        "confusion": {"ivr": {"ivr": 24, "machine": 52, "human": 1}, "machine": {"machine": 115, "human": 26},
                      "human": {"human": 68}},
    }
    assert fold_errors(m) == "ivr_menu 13/56; vm_carrier 115/143 | ivr -> machine 52, machine -> human 26, ivr -> human 1"
    perfect = {"accuracy_by_subtype": {"human_short": {"n": 3, "accuracy": 1.0}}, "confusion": {"human": {"human": 3}}}
    assert fold_errors(perfect) == "every subtype >= 90 % | no wrong verdict"
