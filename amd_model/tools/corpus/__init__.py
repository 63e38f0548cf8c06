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

One concern per module, imported one way (lower first): system_tools (TTS engines, sox and Asterisk
sounds: what is installed, apt installs), audio (WAV I/O and channel effects), greetings (the real dev
greetings and their fixed split) -> voices (drawing a speaker, TTS), texts (what calls say) -> calls
(one labelled call) -> builder (the multiprocess build and the index files). This package re-exports the
names used elsewhere; patch a name in the module that looks it up (e.g. system_tools._piper_model,
greetings.dev_greetings), not here.
"""

from amd_model.tools.corpus.audio import SR, phone_agc, read_wav, rms, room_reverb, trim, write_wav
from amd_model.tools.corpus.builder import build, engine_set
from amd_model.tools.corpus.calls import CHANNELS, CLASSES_CALL, REAL_POOLS, build_call
from amd_model.tools.corpus.greetings import DEV_GREETINGS, dev_greetings_split
from amd_model.tools.corpus.system_tools import (
    DEFAULT_ENGINES,
    ENGINE_WEIGHTS,
    PIPER_PIP,
    apt_install,
    debian_mirror,
    enable_nonfree_apt,
    engine_voices,
    ensure_tools,
)
from amd_model.tools.corpus.voices import Voice, pick_voice, tts

__all__ = [
    "CHANNELS",
    "CLASSES_CALL",
    "DEFAULT_ENGINES",
    "DEV_GREETINGS",
    "ENGINE_WEIGHTS",
    "PIPER_PIP",
    "REAL_POOLS",
    "SR",
    "Voice",
    "apt_install",
    "build",
    "build_call",
    "debian_mirror",
    "dev_greetings_split",
    "enable_nonfree_apt",
    "engine_set",
    "engine_voices",
    "ensure_tools",
    "phone_agc",
    "pick_voice",
    "read_wav",
    "rms",
    "room_reverb",
    "trim",
    "tts",
    "write_wav",
]
