"""The corpus builder is reproducible from its seed and writes what `callgate eval` reads."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from amd_model.tools import corpus

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite") and shutil.which("sox")),
    reason="needs espeak-ng, flite and sox (apt)",
)


def _digest(d: Path) -> tuple[list[list[str]], list[str]]:
    rows = list(csv.reader(open(d / "labels.csv")))
    audio = [hashlib.sha1((d / r[0]).read_bytes()).hexdigest() for r in rows[1:]]
    return rows, audio


def test_three_calls_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "_piper_model", lambda: None)  # keep the test fast and offline-simple
    monkeypatch.setattr(corpus, "_dev_greetings", lambda: ([], []))
    a = corpus.build(tmp_path / "a", 3, seed=5, workers=1, progress=False)
    b = corpus.build(tmp_path / "b", 3, seed=5, workers=1, progress=False)
    ra, ha = _digest(tmp_path / "a")
    rb, hb = _digest(tmp_path / "b")
    assert ra == rb and ha == hb
    assert ra[0][:3] == ["file", "label", "beep_onset_ms"]
    assert len(a) == len(b) == 3
    for m in a:
        assert m["label"] in corpus.CLASSES_CALL
        assert m["split"] in ("train", "val", "test")
        assert 5500 <= m["duration_ms"] <= 13000
        assert all(
            s["kind"] in {"speech", "silence", "greeting", "beep", "music", "tone", "noise"}
            for s in m["segments"]
        )
    meta = [json.loads(x) for x in open(tmp_path / "a" / "meta.jsonl")]
    assert [m["sha1"] for m in meta] == [m["sha1"] for m in a]
    c = corpus.build(tmp_path / "c", 3, seed=6, workers=1, progress=False)
    assert [m["sha1"] for m in c] != [m["sha1"] for m in a]


def test_channel_v2_changes_the_channel_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v2's effects draw from their own random stream: same call, same labels and timings, other audio."""
    monkeypatch.setattr(corpus, "_piper_model", lambda: None)
    monkeypatch.setattr(corpus, "_dev_greetings", lambda: ([], []))
    tools = corpus.ensure_tools(install=False)
    changed = 0
    for i in (4, 7):  # seed 29: a reverberant human and one more
        p1, m1 = corpus.build_call(i, 29, tools, tmp_path, channel="v1")
        p2, m2 = corpus.build_call(i, 29, tools, tmp_path, channel="v2")
        assert "channel_fx" not in m1 and isinstance(m2["channel_fx"], list)
        keep = ("label", "subtype", "voice", "speech_onset_ms", "first_utterance_end_ms", "segments", "split")
        assert {k: m1[k] for k in keep} == {k: m2[k] for k in keep}
        assert p1.shape == p2.shape
        changed += bool(m2["channel_fx"]) and not np.array_equal(p1, p2)
    assert changed


def test_room_reverb_and_agc_keep_length_and_peak() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(8000) * np.r_[np.ones(4000), np.full(4000, 0.01)]).astype(np.float32) * 0.3
    y, what = corpus.room_reverb(x, np.random.default_rng(1))
    assert y.shape == x.shape and "rt60" in what
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-4)
    z, what = corpus.phone_agc(x, np.random.default_rng(2))
    assert z.shape == x.shape and what.startswith("agc")
    quiet_gain = corpus.rms(z[6000:]) / corpus.rms(x[6000:])
    loud_gain = corpus.rms(z[:3000]) / corpus.rms(x[:3000])
    assert quiet_gain > 1.5 * loud_gain  # the pause comes up relative to the speech
