"""A call's speaker: draw a Voice from the installed TTS engines and synthesize an utterance with it.

Why apart: every engine (espeak-ng, flite, festival, mbrola, pico, piper, Asterisk's Allison recordings)
is wrapped here behind one call, tts(), so the call assembly never sees engine command lines.
"""

from __future__ import annotations

import json
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amd_model.tools.corpus.audio import SR, read_wav, trim
from amd_model.tools.corpus.system_tools import (
    ALLISON,
    ENGINE_WEIGHTS,
    ESPEAK_LANGS,
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    _piper_model,
    engine_voices,
)


@dataclass
class Voice:
    """One speaker for a whole call: engine, voice id, and a fixed pitch/tempo personality."""

    engine: str
    name: str
    pitch: int = 50  # espeak -p
    speed: int = 160  # espeak -s
    sox_pitch: float = 0.0  # cents
    sox_tempo: float = 1.0
    seed: int = 0  # piper: its sampling noise, so a call sounds the same on every build

    def describe(self) -> str:
        """Engine, colon, voice, personality: folds.family reads the engine before the colon."""
        if self.engine == "espeak-ng":
            return f"{self.engine}:{self.name} p{self.pitch} s{self.speed}"
        return f"{self.engine}:{self.name} pitch{self.sox_pitch:+.0f}c tempo{self.sox_tempo:.2f}"


def pick_voice(rng: np.random.Generator, tools: dict[str, bool]) -> Voice:
    """A random speaker from the installed engines (ENGINE_WEIGHTS): espeak-ng has the most variety,
    piper is the most natural; every engine but espeak-ng gets a sox pitch/tempo personality."""
    engines = [e for e, w in ENGINE_WEIGHTS.items() if tools.get(e) for _ in range(w)]
    eng = engines[int(rng.integers(len(engines)))]
    if eng == "espeak-ng":
        lang = ESPEAK_LANGS[int(rng.integers(len(ESPEAK_LANGS)))]
        var = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
        return Voice(
            "espeak-ng", f"{lang}+{var}", pitch=int(rng.integers(25, 80)), speed=int(rng.integers(135, 200))
        )
    if eng == "flite":
        name = FLITE_VOICES[int(rng.integers(len(FLITE_VOICES)))]
    elif eng == "piper":
        name = "joe-us"
    else:
        names = engine_voices(eng)
        if not names:
            raise RuntimeError(f"{eng} is in tools but has no installed voice")
        name = names[int(rng.integers(len(names)))]
    v = Voice(eng, name, sox_pitch=float(rng.uniform(-250, 250)), sox_tempo=float(rng.uniform(0.88, 1.15)))
    if eng == "piper":
        v.seed = int(rng.integers(2**31))
    return v


def _tts_command(text: str, voice: Voice, raw: Path) -> list[str]:
    """The command that writes `text` in `voice` to the WAV `raw` (piper runs in-process: [])."""
    if voice.engine == "espeak-ng":
        p, s = str(voice.pitch), str(voice.speed)
        return ["espeak-ng", "-v", voice.name, "-p", p, "-s", s, "-w", str(raw), text]
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-t", text, "-o", str(raw)]
    if voice.engine == "festival" or voice.name.endswith("-festival"):
        txt = raw.with_suffix(".txt")
        txt.write_text(text, encoding="latin-1", errors="replace")  # festival reads bytes, not UTF-8
        name = voice.name.replace("-festival", "_mbrola")
        return ["text2wave", "-eval", f"(voice_{name})", str(txt), "-o", str(raw)]
    if voice.engine == "mbrola":
        return ["espeak-ng", "-v", f"mb-{voice.name}", "-w", str(raw), text]
    if voice.engine == "pico":
        return ["pico2wave", "-l", voice.name, "-w", str(raw), text]
    if voice.engine == "piper":
        return []
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def tts(text: str, voice: Voice, tmp: Path, rng: np.random.Generator | None = None) -> np.ndarray:
    """Synthesize one utterance -> trimmed float32 at 8 kHz (pitch/tempo applied with sox)."""
    raw, out = tmp / "tts_raw.wav", tmp / "tts_8k.f32"
    raw.unlink(missing_ok=True)
    cmd = _tts_command(text, voice, raw)
    if cmd:
        r = subprocess.run(cmd, capture_output=True, timeout=120)
    else:
        with wave.open(str(raw), "wb") as w:
            _piper_voice(voice).synthesize_wav(text, w)
        r = subprocess.CompletedProcess([], 0, b"", b"")
    legacy = voice.engine in ("espeak-ng", "flite")  # as before, so older corpora rebuild identically
    if r.returncode or not raw.exists() or (not legacy and raw.stat().st_size <= 44):  # 44: header only
        raise RuntimeError(f"TTS failed ({voice.describe()}): {r.stderr.decode(errors='replace')[:200]}")
    effects: list[str] = []
    if not legacy:
        effects = ["highpass", "50"]  # festival's don voice has a DC offset: a click at every utterance edge
    if voice.engine != "espeak-ng":
        effects += ["pitch", f"{voice.sox_pitch:.0f}", "tempo", "-s", f"{voice.sox_tempo:.3f}"]
    cmd = [
        "sox",
        "-D",
        str(raw),
        "-t",
        "raw",
        "-r",
        str(SR),
        "-c",
        "1",
        "-e",
        "floating-point",
        "-b",
        "32",
        "-L",
        str(out),
        *effects,
    ]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode:
        raise RuntimeError(f"sox failed: {r.stderr.decode(errors='replace')[:200]}")
    y = trim(np.fromfile(out, dtype="<f4").astype(np.float32))
    raw.unlink(missing_ok=True)
    return y / (np.abs(y).max() + 1e-9) * 0.5


_PIPER: dict = {}


def _piper_voice(voice: Voice):  # noqa: ANN202 (piper is optional, so no import-time type)
    """Piper's VITS graph samples noise inside onnxruntime, seeded when a session is created: one fresh
    session per call, seeded from the call's voice, keeps a call identical whatever worker builds it
    (the model stays in memory; a session costs ~0.5 s)."""
    if _PIPER.get("voice") is not voice:
        import onnxruntime as ort
        from piper import PiperConfig, PiperVoice  # type: ignore[import-not-found]

        if "config" not in _PIPER:
            model = Path(str(_piper_model()))
            _PIPER["model"] = model.read_bytes()
            _PIPER["config"] = PiperConfig.from_dict(
                json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
            )
        ort.set_seed(voice.seed)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # the builder's workers are the parallelism
        session = ort.InferenceSession(_PIPER["model"], sess_options=opts, providers=["CPUExecutionProvider"])
        _PIPER.update(voice=voice, piper=PiperVoice(session=session, config=_PIPER["config"]))
    return _PIPER["piper"]


def allison(name: str) -> np.ndarray:
    """One Asterisk Allison prompt, trimmed, peak 0.5."""
    y = trim(read_wav(ALLISON / f"{name}.wav"))
    return y / (np.abs(y).max() + 1e-9) * 0.5
