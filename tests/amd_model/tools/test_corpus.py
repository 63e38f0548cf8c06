"""The corpus builder is reproducible from its seed and writes what `callgate eval` reads."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

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
