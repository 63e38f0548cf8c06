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
from amd_model.tools.corpus import greetings, system_tools

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite") and shutil.which("sox")),
    reason="needs espeak-ng, flite and sox (apt)",
)


def _digest(d: Path) -> tuple[list[list[str]], list[str]]:
    rows = list(csv.reader(open(d / "labels.csv")))
    audio = [hashlib.sha1((d / r[0]).read_bytes()).hexdigest() for r in rows[1:]]
    return rows, audio


def test_three_calls_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_tools, "_piper_model", lambda: None)  # keep the test fast and offline-simple
    monkeypatch.setattr(greetings, "dev_greetings", lambda: ([], []))
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
    engines = json.loads((tmp_path / "a" / "corpus.json").read_text())["engines"]  # what the seed needs
    assert {"espeak-ng", "flite"} <= set(engines) and "piper" not in engines
    c = corpus.build(tmp_path / "c", 3, seed=6, workers=1, progress=False)
    assert [m["sha1"] for m in c] != [m["sha1"] for m in a]


def test_channel_v2_changes_the_channel_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v2's effects draw from their own random stream: same call, same labels and timings, other audio."""
    monkeypatch.setattr(system_tools, "_piper_model", lambda: None)
    monkeypatch.setattr(greetings, "dev_greetings", lambda: ([], []))
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


# ---------------------------------------------------------------- the added voice engines

PHRASE = "Hello, this is Dana speaking."


def _check_utterance(y: np.ndarray, what: str) -> None:
    """Non-silent speech at 8 kHz: a 5-word phrase lasts ~1-3 s (twice that if the engine's own rate
    leaked through the resampling), most 10 ms frames are voiced, peak normalized to 0.5."""
    assert y.dtype == np.float32 and y.ndim == 1, what
    assert 0.8 * corpus.SR <= y.size <= 4.0 * corpus.SR, f"{what}: {y.size / corpus.SR:.2f} s"
    assert np.isclose(np.abs(y).max(), 0.5, atol=1e-3) and corpus.rms(y) > 0.02, what
    frames = y[: y.size // 80 * 80].reshape(-1, 80)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    assert np.mean(level > level.max() - 30) > 0.4, f"{what}: mostly silence"
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / corpus.SR)
    assert spec[(freqs > 50) & (freqs < 3800)].sum() > 0.9 * spec.sum(), f"{what}: not speech-band (DC?)"


def _voices_or_skip(engine: str, how: str) -> tuple[str, ...]:
    names = corpus.engine_voices(engine)
    if not names:
        pytest.skip(f"{engine} is not installed ({how})")
    return names


@pytest.mark.parametrize(
    ("engine", "how"),
    [
        ("festival", "apt festival festlex-cmu festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
        ("mbrola", "apt mbrola mbrola-us1 ... from Debian contrib/non-free"),
        ("pico", "apt libttspico-utils from Debian non-free"),
    ],
)
def test_debian_engine_speaks_every_voice(engine: str, how: str, tmp_path: Path) -> None:
    for name in _voices_or_skip(engine, how):
        v = corpus.Voice(engine, name, sox_pitch=80.0, sox_tempo=1.05)
        _check_utterance(corpus.tts(PHRASE, v, tmp_path), v.describe())


def test_piper_speaks_and_repeats_itself_for_the_same_seed(tmp_path: Path) -> None:
    """Piper samples noise inside onnxruntime: the voice's seed must make a call sound the same on every
    build, and another seed must not."""
    _voices_or_skip("piper", f"pip install {corpus.PIPER_PIP}")
    say = lambda v: corpus.tts(PHRASE, v, tmp_path)  # noqa: E731
    a = say(corpus.Voice("piper", "joe-us", seed=3))
    _check_utterance(a, "piper:joe-us")
    assert np.array_equal(a, say(corpus.Voice("piper", "joe-us", seed=3)))
    assert not np.array_equal(a, say(corpus.Voice("piper", "joe-us", seed=4)))


def test_pick_voice_only_picks_installed_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    from amd_model.tools import folds

    rng = np.random.default_rng(0)
    base = {"espeak-ng": True, "flite": True, "festival": False, "mbrola": False, "pico": False, "piper": False}
    assert {corpus.pick_voice(rng, base).engine for _ in range(300)} == {"espeak-ng", "flite"}
    # with only espeak-ng and flite the draws are the ones older corpora were built from
    rng = np.random.default_rng(0)
    assert [corpus.pick_voice(rng, base).describe() for _ in range(3)] == [
        "flite:rms pitch-115c tempo0.89",
        "espeak-ng:en-us+m5 p69 s177",
        "flite:awb pitch+115c tempo1.03",
    ]
    tools = corpus.ensure_tools(install=False)
    installed = {e for e in corpus.ENGINE_WEIGHTS if tools.get(e)}
    voices = [corpus.pick_voice(rng, tools) for _ in range(600)]
    assert {v.engine for v in voices} == installed  # every installed engine, nothing else
    for v in voices:
        if v.engine in ("festival", "mbrola", "pico", "piper"):
            assert v.name in corpus.engine_voices(v.engine)
        assert folds.family({"voice": v.describe()}) != "none"
    monkeypatch.setattr(system_tools, "_piper_model", lambda: None)
    assert not corpus.ensure_tools(install=False)["piper"]


def test_a_missing_engine_is_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(system_tools, "_can_apt", lambda: False)
    monkeypatch.setattr(system_tools, "_apt_engine_voices", lambda e: ())
    monkeypatch.setattr(system_tools, "_piper_model", lambda: None)
    tools = corpus.ensure_tools(install=True)
    assert not (tools["festival"] or tools["mbrola"] or tools["pico"] or tools["piper"])
    err = capsys.readouterr().err
    assert "pico: not installed and not root, skipped (apt-get install libttspico-utils with contrib/non-free)" in err
    assert "piper: not installed, skipped (pip install piper-tts==1.8.0" in err
    assert "festival, mbrola and pico are drawn only when --engines names them" in err  # the default build
    assert {corpus.pick_voice(np.random.default_rng(1), tools).engine for _ in range(50)} <= {"espeak-ng", "flite"}


def test_nonfree_source_uses_the_mirror_already_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb822 = (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://mirror.test/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    monkeypatch.setattr(system_tools, "_apt_sources", lambda: [(deb822, "/etc/apt/sources.list.d/debian.sources")])
    assert corpus.debian_mirror() == ("http://mirror.test/debian", "/usr/share/keyrings/k.gpg")
    one_line = "# old style\ndeb [arch=amd64] http://old.test/debian bookworm main\n"
    monkeypatch.setattr(system_tools, "_apt_sources", lambda: [(one_line, "/etc/apt/sources.list")])
    assert corpus.debian_mirror() == ("http://old.test/debian", None)
    monkeypatch.setattr(system_tools, "_apt_sources", lambda: [(deb822, "/etc/apt/sources.list.d/debian.sources")])
    monkeypatch.setattr(system_tools, "NONFREE_SOURCE", tmp_path / "nf.sources")
    monkeypatch.setattr(system_tools, "_can_apt", lambda: True)
    assert corpus.enable_nonfree_apt()
    text = (tmp_path / "nf.sources").read_text()
    assert "URIs: http://mirror.test/debian\n" in text and "Components: contrib non-free\n" in text
    assert "Types: deb\n" in text and "Suites: " in text and "Signed-By: /usr/share/keyrings/k.gpg" in text


def test_engines_limit_the_voices_and_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`engines` keeps a build to the named TTS engines (how 1.3.0's espeak-ng + flite corpora are rebuilt)."""
    monkeypatch.setattr(greetings, "dev_greetings", lambda: ([], []))
    metas = corpus.build(tmp_path / "a", 4, seed=5, workers=1, progress=False, engines=["flite"])
    voices = [m["voice"] for m in metas if m.get("voice")]
    assert voices and all(v.startswith(("flite:", "asterisk")) for v in voices)
    assert list(json.loads((tmp_path / "a" / "corpus.json").read_text())["engines"]) == ["flite"]
    with pytest.raises(ValueError, match="unknown TTS engine"):
        corpus.build(tmp_path / "b", 1, seed=5, workers=1, progress=False, engines=["espeak"])
    corpus.build(tmp_path / "c", 1, seed=5, workers=1, progress=False)  # the default: the engines before
    assert set(json.loads((tmp_path / "c" / "corpus.json").read_text())["engines"]) <= set(corpus.DEFAULT_ENGINES)
