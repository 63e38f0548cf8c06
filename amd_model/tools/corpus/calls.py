"""Assemble one labelled call from (seed, index): pick a call type, lay out speech, beeps, tones and
silence on a timeline with segment labels, then pass it through a phone channel.

Why apart: this is the labelling contract (what makes a call human, machine, IVR, intercept or unknown,
and where its evidence starts); the driver in builder.py only runs it many times and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amd_model.tools.corpus import greetings
from amd_model.tools.corpus.audio import (
    SR,
    amr_roundtrip,
    colored_noise,
    gsm_roundtrip,
    phone_agc,
    read_wav,
    rms,
    room_reverb,
    speech_bounds,
)
from amd_model.tools.corpus.system_tools import ALLISON
from amd_model.tools.corpus.texts import (
    ALLISON_INTERCEPT,
    ALLISON_IVR,
    ALLISON_VM,
    HUMAN_BUSINESS,
    HUMAN_MORE,
    HUMAN_SECOND,
    HUMAN_SHORT,
    INTERCEPT,
    IVR,
    VM_BUSINESS,
    VM_CARRIER,
    VM_PERSONAL,
    choice,
    fill,
)
from amd_model.tools.corpus.voices import Voice, allison, pick_voice, tts
from callgate import synth

CLASSES_CALL = ("human", "machine", "ivr", "carrier_intercept", "unknown")


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
    dev_train, dev_test = greetings.dev_greetings()
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
