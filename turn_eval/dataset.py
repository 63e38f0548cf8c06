"""The turn-taking dev/test set: synthetic phone calls of a caller taking turns, with labels.

Each call is one 8 kHz WAV: a caller (one offline voice: espeak-ng, flite, or Asterisk's recorded
Allison voice reading digits) takes 4-6 turns separated by the gaps where the agent would talk. Turns
are short answers, hesitations ("um, ..."), lists, numbers read in groups and questions after a
preamble; about 60 % have inner pauses of 300-1500 ms. Behind the caller: nothing, a second speaker,
a TV (speech over a room), music, or café babble, 6-20 dB below the caller's active level, then the
telephone channel (300-3400 Hz, µ-law) over everything.

`labels.json` in the set's folder holds, per file, where each turn starts and truly ends, its
pauses, the text of each spoken segment (its words up to that point are what an STT would have
given), and every background-speech span with its level relative to the caller.

The dev and test splits use disjoint voices and disjoint word pools (names, items, places), so the
text model and tuned parameters never see a test sentence. Everything is drawn from one seed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callgate.audio import save_wav, to_int16
from callgate.synth import (
    SR,
    _bandpass_fir,
    active_rms,
    asterisk_prompt,
    asterisk_prompt_names,
    hold_music,
    pink_noise,
    speech,
    telephone_channel,
)

LABELS_FILE = "labels.json"
SPLITS = ("dev", "test")

# Word pools: dev and test never share an entry.
LEX: dict[str, dict[str, list[str]]] = {
    "dev": {
        "first": ["Maria", "James", "Linda", "Robert", "Susan", "Michael", "Karen", "David"],
        "last": ["Johnson", "Garcia", "Miller", "Davis", "Lopez", "Wilson"],
        "item": ["eggs", "milk", "bread", "coffee", "rice", "apples", "butter", "cheese", "soap", "towels"],
        "thing": ["bill", "order", "package", "account", "router", "prescription", "invoice", "card"],
        "place": ["Chicago", "Denver", "Boston", "Austin", "Seattle"],
        "day": ["Monday", "Tuesday", "Friday"],
        "problem": ["went up", "never arrived", "stopped working", "was charged twice"],
        "verb": ["cancel", "change", "check on", "update"],
    },
    "test": {
        "first": ["Patricia", "Thomas", "Nancy", "Daniel", "Sandra", "Kevin", "Emily", "Brian"],
        "last": ["Anderson", "Martinez", "Taylor", "Thompson", "Moore", "Clark"],
        "item": ["pasta", "yogurt", "onions", "tea", "flour", "bananas", "sugar", "tissues", "batteries", "juice"],
        "thing": ["statement", "delivery", "subscription", "modem", "refund", "appointment", "policy", "ticket"],
        "place": ["Phoenix", "Atlanta", "Portland", "Dallas", "Miami"],
        "day": ["Wednesday", "Thursday", "Saturday"],
        "problem": ["is wrong", "got lost", "keeps failing", "was declined"],
        "verb": ["move", "pause", "look at", "renew"],
    },
}
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# (engine, voice, pitch range, rate range). Test voices are never heard in dev.
VOICES: dict[str, list[tuple[str, str]]] = {
    "dev": [("espeak-ng", "en-us+m3"), ("espeak-ng", "en-us+f2"), ("espeak-ng", "en-gb+m1"),
            ("flite", "slt"), ("flite", "awb")],
    "test": [("espeak-ng", "en-us+f4"), ("espeak-ng", "en-us+m7"), ("espeak-ng", "en-029+m2"),
             ("flite", "kal"), ("flite", "rms")],
}
BACKGROUND_VOICES: dict[str, list[tuple[str, str]]] = {
    "dev": [("espeak-ng", "en-us+m5"), ("flite", "kal16"), ("allison", "")],
    "test": [("espeak-ng", "en-gb+f3"), ("flite", "kal16"), ("allison", "")],
}
# Voices that are one speaker under two names: a background talker is never the caller's own voice.
SAME_SPEAKER = {("flite", "kal"): ("flite", "kal16")}
# Real recordings as background talkers (`--real-background DIR`: the development greetings, read at
# build time and never copied into the repository). Split by speaker: dev and test hear different
# people; files of one speaker (Niva x2, the two ElevenLabs "Hope" prompts, the consent pair) stay together.
REAL_SPEAKERS: dict[str, list[str]] = {
    "dev": ["Ameer_VM", "Bianca_VM", "David_Voicemail", "Erin_Voicemail", "Kristine_Voicemail", "Lisa_Voicemail",
            "Nicholas_Voicemail", "Niva_Revised", "Niva_Voicemail", "Richard_Voicemail", "Sandra_Voicemail",
            "Stephanie_Voicemail", "AdminLine", "BusinessHours"],
    "test": ["Ari_Voicemail", "Elizabeth_Voicemail", "Eric_Sommer_VM", "Kimberly_Voicemail", "Lindsey_VM",
             "Maddie_VM", "Samantha_Voicemail", "Sheldon_VM", "Sidoti_VM", "Finance_VM", "CallConsent",
             "RevisedConsent", "ScheduledCallGreeting"],
}
CONDITIONS = (("none", 0.2), ("second_speaker", 0.25), ("tv", 0.25), ("music", 0.15), ("cafe", 0.15))
TV_LINES = [
    "And now the weather for the weekend.", "Scattered showers are expected tonight.",
    "The home team scored twice in the second half.", "Stay tuned for more after the break.",
    "Prices are falling at the pump this week.", "Officials said the bridge will reopen soon.",
    "Here is what you need to know today.", "That was a great game last night.",
    "Call now and get a second one free.", "Traffic is heavy on the north side.",
]


def _digits(rng: np.random.Generator, n: int) -> str:
    return " ".join(DIGIT_WORDS[int(d)] for d in rng.integers(0, 10, n))


def turn_script(kind: str, rng: np.random.Generator, lex: dict[str, list[str]]) -> list[str]:
    """The spoken segments of one turn; a pause separates consecutive segments."""

    def pick(k: str) -> str:
        return str(rng.choice(lex[k]))

    def variant(options: list[list[list[str]]]) -> list[str]:
        chosen = options[int(rng.integers(len(options)))]
        return [alts[int(rng.integers(len(alts)))] for alts in chosen]

    if kind == "short":
        return [str(rng.choice([
            "Yes, that's right.", "No, I don't think so.", f"My name is {pick('first')} {pick('last')}.",
            f"I'm calling about my {pick('thing')}.", f"I'd like to {pick('verb')} my {pick('thing')}.",
            "Okay, sounds good.", f"It was on {pick('day')}.", f"I live in {pick('place')}.",
        ]))]
    if kind == "hesitation":
        return variant([
            [["I was wondering, um,", "So, uh,"], [f"if you could {pick('verb')} my {pick('thing')}."]],
            [["I think the, uh,"], [f"the {pick('thing')} {pick('problem')}."]],
            [["Well,", "Hmm, let me see,"], [f"I need to {pick('verb')} the {pick('thing')}"],
             ["before the end of the month."]],
            [["Hmm,"], [f"my name is {pick('first')}"], [f"{pick('last')}."]],
            [[f"I called on {pick('day')} and"], ["um,"], [f"nobody helped me with my {pick('thing')}."]],
        ])
    if kind == "list":
        items = list(rng.choice(lex["item"], size=int(rng.integers(3, 5)), replace=False))
        segs = [f"I need {items[0]},"] + [f"{it}," for it in items[1:-1]] + [f"and {items[-1]}."]
        return segs
    if kind == "numbers":
        form = int(rng.integers(0, 3))
        if form == 0:
            return ["My number is", _digits(rng, 3), _digits(rng, 3), _digits(rng, 4) + "."]
        if form == 1:
            return ["The account number is", _digits(rng, 4), _digits(rng, 4) + "."]
        return [f"The order is {_digits(rng, 2)}", _digits(rng, 3) + "."]
    if kind == "question":
        return variant([
            [[f"So I got my {pick('thing')} yesterday,"], ["and I wanted to ask"], [f"why it {pick('problem')}?"]],
            [["Can you tell me"], [f"when the {pick('thing')} will get to {pick('place')}?"]],
            [["Quick question,"], [f"do you have any {pick('item')} left?"]],
            [[f"I moved to {pick('place')} last {pick('day')}"], ["so"], [f"can I {pick('verb')} my {pick('thing')}?"]],
        ])
    raise ValueError(f"unknown turn kind {kind!r}")


KINDS = (("short", 0.2), ("hesitation", 0.2), ("list", 0.15), ("numbers", 0.25), ("question", 0.2))


def _trim(x: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """Cut leading/trailing silence: 10 ms frames within floor_db of the loudest one bound the speech."""
    k = SR // 100
    m = len(x) // k
    if m == 0:
        return x
    p = np.mean(np.square(x[: m * k].reshape(m, k), dtype=np.float64), axis=1)
    on = np.flatnonzero(p >= p.max() * 10 ** (floor_db / 10))
    return x[on[0] * k : (on[-1] + 1) * k].astype(np.float32)


_PHONE_BAND = _bandpass_fir(300.0, 3400.0)


def speech_level(x: np.ndarray) -> float:
    """A talker's level as a gate hears it: 90th percentile RMS of the 32 ms windows within 30 dB of the loudest.

    Normalising caller segments and background spans by this (not by average power) keeps one caller at
    one level whatever the voice's crest factor, and makes "background 6-20 dB below the caller" mean
    what a listener (or a level-based gate) would measure.
    """
    x = np.convolve(np.asarray(x, dtype=np.float64), _PHONE_BAND, mode="same")  # what survives the line
    k = 256
    m = len(x) // k
    if m == 0:
        return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
    p = np.mean(np.square(x[: m * k].reshape(m, k), dtype=np.float64), axis=1)
    on = p[p >= p.max() * 1e-3]
    return float(np.sqrt(np.percentile(on, 90)))


def _say(text: str, engine: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    if engine == "allison":  # a recorded human voice: digits as Asterisk prompts, else a random prompt
        words = text.rstrip(".,?").split()
        if all(w in DIGIT_WORDS for w in words):
            parts = [_trim(asterisk_prompt(f"digits/{DIGIT_WORDS.index(w)}")) for w in words]
            return np.concatenate(parts)
        names = [n for n in asterisk_prompt_names() if "/" not in n]
        return _trim(asterisk_prompt(str(rng.choice(names))))
    rate = int(rng.integers(140, 185))
    pitch = int(rng.integers(30, 70)) if engine == "espeak-ng" else int(rng.integers(90, 190))
    return _trim(speech(text, voice=voice, engine=engine, rate=rate, pitch=pitch))


def _real_excerpt(folder: Path, split: str, rng: np.random.Generator) -> np.ndarray:
    """2-5 s of a real recorded voice (a development greeting of this split's speakers), cut at quiet frames."""
    from callgate.audio import load_audio

    names = [n for n in REAL_SPEAKERS[split] if (folder / f"{n}.wav").is_file()]
    if not names:
        raise ValueError(f"{folder}: none of the {split} split's real recordings is there")
    x = load_audio(folder / f"{rng.choice(names)}.wav").astype(np.float32) / 32768.0
    k = SR // 100
    p = np.mean(np.square(x[: len(x) // k * k].reshape(-1, k)), axis=1)
    loud = p >= p.max() * 10 ** (-30 / 10)
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1  # speech onsets (10 ms frames)
    if len(starts) == 0:
        return _trim(x)
    a = int(rng.choice(starts))
    want = int(rng.uniform(2.0, 5.0) * 100)
    quiet_after = np.flatnonzero(~loud[a + want // 2 :])
    b = a + want // 2 + (int(quiet_after[0]) if len(quiet_after) else want)
    return _trim(x[a * k : min(b, a + 2 * want) * k])


def _room(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = float(rng.uniform(0.25, 0.6))
    n = int(rt60 * SR)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir *= 0.5 / np.sqrt(np.sum(ir**2))
    ir[0] = 1.0
    lp = float(rng.uniform(0.3, 0.6)) ** np.arange(32)
    ir = np.convolve(ir, lp / lp.sum())
    return np.convolve(x, ir)[: len(x)].astype(np.float32)


@dataclass
class _Track:
    audio: np.ndarray

    def add(self, x: np.ndarray, at: int) -> None:
        end = at + len(x)
        if end > len(self.audio):
            self.audio = np.concatenate([self.audio, np.zeros(end - len(self.audio), np.float32)])
        self.audio[at:end] += x


def _ms(n: int) -> float:
    return round(n * 1000 / SR, 1)


def build_call(split: str, index: int, seed: int, real_dir: str | Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One call: PCM16 audio and its labels (deterministic in split, index, seed and real_dir).

    With real_dir (the development greetings), a second speaker or a TV is a real recorded person half
    of the time (`bg_voice` in the span's label says which)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    lex = LEX[split]
    engine, voice = VOICES[split][int(rng.integers(len(VOICES[split])))]
    caller_dbfs = float(rng.uniform(-26, -10))  # speech_level of the caller, before the channel
    caller_rms = 10 ** (caller_dbfs / 20)
    cond = str(rng.choice([c for c, _ in CONDITIONS], p=[p for _, p in CONDITIONS]))
    rel_db = float(rng.uniform(-20, -6))
    caller = _Track(np.zeros(int(rng.uniform(0.6, 1.5) * SR), np.float32))
    turns: list[dict[str, Any]] = []
    caller_speakers = {(engine, voice), SAME_SPEAKER.get((engine, voice), (engine, voice))}
    pos = len(caller.audio)
    n_turns = int(rng.integers(4, 7))
    kinds = [k for k, _ in KINDS]
    for t in range(n_turns):
        kind = "short" if t == 0 else str(rng.choice(kinds, p=[p for _, p in KINDS]))
        segs = turn_script(kind, rng, lex)
        paused = len(segs) > 1 and rng.random() < 0.8
        if not paused:
            segs = [" ".join(segs)]
        use_allison = kind == "numbers" and rng.random() < 0.3
        gain_db = float(rng.normal(0, 2.0))
        audio_segs = []
        for s in segs:
            if use_allison and all(w in DIGIT_WORDS for w in s.rstrip(".").split()):
                a = _say(s, "allison", "", rng)
                caller_speakers.add(("allison", ""))
            else:
                a = _say(s, engine, voice, rng)
            audio_segs.append(a)
        seg_labels, pauses = [], []
        start = pos
        for i, (s, a) in enumerate(zip(segs, audio_segs, strict=True)):
            # Each segment at the turn's level: one caller, one phone distance (Allison's digits included).
            a = a * (caller_rms * 10 ** (gain_db / 20) / (speech_level(a) + 1e-12))
            caller.add(a, pos)
            seg_labels.append({"text": s, "start_ms": _ms(pos), "end_ms": _ms(pos + len(a))})
            pos += len(a)
            if i < len(segs) - 1:
                gap = int(rng.uniform(0.3, 1.5) * SR)
                pauses.append([_ms(pos), _ms(pos + gap)])
                pos += gap
        turns.append({"kind": kind, "start_ms": _ms(start), "end_ms": _ms(pos), "pauses": pauses,
                      "segments": seg_labels, "text": " ".join(segs)})
        pos += int(rng.uniform(3.6, 5.0) * SR)  # the agent's reply
    total = pos + int(0.5 * SR)
    caller.add(np.zeros(0, np.float32), total)
    caller.audio = caller.audio[:total]

    bg = np.zeros(total, np.float32)
    spans: list[dict[str, Any]] = []
    bg_rms = caller_rms * 10 ** (rel_db / 20)
    if cond in ("second_speaker", "tv"):
        bvoices = [v for v in BACKGROUND_VOICES[split] if v not in caller_speakers]
        if real_dir is not None:
            bvoices = bvoices + [("real", "")] * len(bvoices)
        t = int(rng.uniform(0.0, 2.0) * SR)
        while t < total - SR:
            be, bv = bvoices[int(rng.integers(len(bvoices)))]
            text = str(rng.choice(TV_LINES)) if cond == "tv" else turn_script(
                str(rng.choice(["short", "question"])), rng, lex)[-1]
            a = _real_excerpt(Path(real_dir), split, rng) if be == "real" else _say(text, be, bv, rng)
            a = _room(a, rng)
            a *= bg_rms / (speech_level(a) + 1e-12)
            a = a[: total - t]
            bg[t : t + len(a)] += a
            spans.append({"kind": cond, "start_ms": _ms(t), "end_ms": _ms(t + len(a)), "rel_db": round(rel_db, 1),
                          "bg_voice": f"{be}:{bv}"})
            gap = rng.uniform(0.3, 1.2) if cond == "tv" else rng.uniform(2.0, 6.0)
            t += len(a) + int(gap * SR)
    elif cond == "music":
        m = hold_music(total / SR, track=int(rng.integers(0, 5)), offset_secs=float(rng.uniform(0, 60)))
        bg += m * (bg_rms / (speech_level(m) + 1e-12))
        spans.append({"kind": "music", "start_ms": 0.0, "end_ms": _ms(total), "rel_db": round(rel_db, 1)})
    elif cond == "cafe":
        babble = np.zeros(total, np.float32)
        bvoices = [v for v in BACKGROUND_VOICES[split] if v not in caller_speakers]
        for _ in range(4):
            t = int(rng.uniform(0, 1.0) * SR)
            while t < total:
                be, bv = bvoices[int(rng.integers(len(bvoices)))]
                a = _say(str(rng.choice(TV_LINES)), be, bv, rng)
                a = a[: total - t] / (active_rms(a) + 1e-12)
                babble[t : t + len(a)] += a
                t += len(a) + int(rng.uniform(0.1, 0.8) * SR)
        babble = _room(babble, rng) + pink_noise(total / SR, rms=0.3, seed=int(rng.integers(1 << 30)))
        bg += babble * (bg_rms / (speech_level(babble) + 1e-12))
        spans.append({"kind": "cafe", "start_ms": 0.0, "end_ms": _ms(total), "rel_db": round(rel_db, 1)})
    floor = pink_noise(total / SR, rms=10 ** (float(rng.uniform(-62, -50)) / 20), seed=int(rng.integers(1 << 30)))
    x = telephone_channel(caller.audio + bg + floor)
    labels = {
        "split": split, "voice": f"{engine}:{voice}", "caller_dbfs": round(caller_dbfs, 1),
        "condition": cond, "rel_db": round(rel_db, 1) if cond != "none" else None,
        "duration_ms": _ms(total), "turns": turns, "background": spans,
    }
    return to_int16(x), labels


def _build_one(args: tuple[str, int, int, str, str | None]) -> tuple[str, dict[str, Any]]:
    split, i, seed, out, real_dir = args
    audio, labels = build_call(split, i, seed, real_dir)
    name = f"{split}_{i:04d}.wav"
    save_wav(Path(out) / name, audio)
    return name, labels


def build_set(
    out_dir: str | Path, split: str, n_calls: int, seed: int = 9, workers: int = 1, real_dir: str | Path | None = None
) -> Path:
    """Write n_calls WAVs and labels.json for one split into out_dir; returns the labels path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if real_dir is not None and not Path(real_dir).is_dir():
        raise ValueError(f"{real_dir}: not a directory of recordings")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(split, i, seed, str(out), None if real_dir is None else str(real_dir)) for i in range(n_calls)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(_build_one, jobs))
    else:
        results = [_build_one(j) for j in jobs]
    labels = {"version": 1, "seed": seed, "split": split, "real_background": real_dir is not None,
              "files": dict(results)}
    path = out / LABELS_FILE
    path.write_text(json.dumps(labels, indent=1))
    return path


def load_labels(folder: str | Path) -> dict[str, Any]:
    """Read and check a set's labels.json (ValueError with the reason when it is unusable)."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {LABELS_FILE} (build a set with scripts/make_turn_set.py)")
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        for name, f in files.items():
            float(f["duration_ms"])
            for t in f["turns"]:
                float(t["start_ms"]), float(t["end_ms"])
                for p in t["pauses"]:
                    float(p[0]), float(p[1])
                for s in t["segments"]:
                    float(s["start_ms"]), float(s["end_ms"]), s["text"].split()
            for b in f.get("background", []):
                float(b["start_ms"]), float(b["end_ms"]), float(b["rel_db"]), b["kind"]
            if not (Path(folder) / name).is_file():
                raise ValueError(f"{name} is labelled but missing")
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: malformed labels ({e.__class__.__name__}: {e})") from e
    return data


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
