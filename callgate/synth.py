"""Synthetic telephone audio for tests, demos and training corpora.

Every generator returns **float32 mono audio at 8 kHz in [-1, 1]** (`callgate.audio.SAMPLE_RATE`);
convert with `callgate.audio.to_int16` for PCM16 frames. Keeping one format means parts can be
concatenated, mixed and passed through `telephone_channel` without any bookkeeping.

Amplitudes are peak amplitudes per sinusoid (1.0 = full scale). Random generators take a `seed` so a
test or corpus build is reproducible. External assets (espeak-ng, flite, Debian's Asterisk sounds and
hold music) are found at call time, and a missing one raises RuntimeError naming the apt package, so
a fresh machine fails loudly instead of silently producing a smaller corpus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callgate.audio import SAMPLE_RATE, load_audio, pcm_to_ulaw, to_float, to_int16, ulaw_to_pcm

SR = SAMPLE_RATE

# Call-progress tones (North American precise tone plan, ITU-T E.180 for SIT).
RINGBACK_HZ = (440.0, 480.0)
BUSY_HZ = (480.0, 620.0)
DIAL_TONE_HZ = (350.0, 440.0)
SIT_HZ = (913.8, 1370.6, 1776.7)  # the common "low" SIT: segment 1, 2, 3
SIT_ALT_HZ = (985.2, 1428.5, 1776.7)  # "high" variants of segments 1 and 2
SIT_SHORT_SECS = 0.274
SIT_LONG_SECS = 0.380
DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")
DTMF_DIGITS = "".join(DTMF_KEYS)

ASTERISK_SOUNDS_DIRS = (
    "/usr/share/asterisk/sounds/en_US_f_Allison",
    "/usr/share/asterisk/sounds/en_US",
    "/usr/share/asterisk/sounds/en",
)
ASTERISK_MOH_DIR = "/usr/share/asterisk/moh"


def _n(secs: float) -> int:
    return max(0, round(secs * SR))


# --- basic signals -------------------------------------------------------------------------------


def silence(secs: float) -> np.ndarray:
    """Digital silence (exact zeros: add noise yourself if a detector must see a floor)."""
    return np.zeros(_n(secs), dtype=np.float32)


def _fade(x: np.ndarray, fade_ms: float) -> np.ndarray:
    """Raised-cosine ramps so tone edges do not splatter energy across the band (like real tone plans)."""
    k = min(int(fade_ms * SR / 1000), len(x) // 2)
    if k > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)).astype(np.float32)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def tone(hz: float, secs: float, amp: float = 0.5, phase: float = 0.0, fade_ms: float = 2.0) -> np.ndarray:
    """A pure sine (a beep) with short fades."""
    t = np.arange(_n(secs)) / SR
    return _fade((amp * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32), fade_ms)


def multi_tone(
    freqs: Sequence[float], secs: float, amp: float = 0.3, fade_ms: float = 2.0, seed: int | None = None
) -> np.ndarray:
    """Sum of sines, each with peak `amp` (call-progress and DTMF tones); random phases if seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(_n(secs)) / SR
    x = np.zeros(len(t))
    for f in freqs:
        ph = rng.uniform(0, 2 * np.pi) if seed is not None else 0.0
        x += amp * np.sin(2 * np.pi * f * t + ph)
    return _fade(x.astype(np.float32), fade_ms)


def dual_tone(f1: float, f2: float, secs: float, amp: float = 0.3, fade_ms: float = 2.0) -> np.ndarray:
    """Two equal sines: the case a beep detector must reject (ringback, busy, DTMF)."""
    return multi_tone((f1, f2), secs, amp=amp, fade_ms=fade_ms)


def cadence(burst: np.ndarray, on_secs: float, off_secs: float, total_secs: float) -> np.ndarray:
    """Repeat `burst` (trimmed/looped to on_secs) + silence(off_secs) until total_secs."""
    on = np.resize(burst, _n(on_secs)).astype(np.float32)
    cycle = np.concatenate([_fade(on, 2.0), silence(off_secs)])
    return np.resize(cycle, _n(total_secs)).astype(np.float32)


def ringback(secs: float = 6.0, amp: float = 0.25) -> np.ndarray:
    """North American ringback: 440+480 Hz, 2 s on / 4 s off."""
    return cadence(multi_tone(RINGBACK_HZ, 2.0, amp), 2.0, 4.0, secs)


def busy(secs: float = 3.0, amp: float = 0.25) -> np.ndarray:
    """North American busy: 480+620 Hz, 0.5 s on / 0.5 s off."""
    return cadence(multi_tone(BUSY_HZ, 0.5, amp), 0.5, 0.5, secs)


def dtmf(
    digits: str, tone_secs: float = 0.1, gap_secs: float = 0.1, amp: float = 0.25, twist_db: float = 0.0
) -> np.ndarray:
    """DTMF digits (0-9 * # A-D); `twist_db` > 0 makes the high (column) tone louder, as phones do."""
    parts = []
    for d in digits.upper():
        row = next((i for i, keys in enumerate(DTMF_KEYS) if d in keys), None)
        if row is None:
            raise ValueError(f"not a DTMF digit: {d!r}")
        col = DTMF_KEYS[row].index(d)
        t = np.arange(_n(tone_secs)) / SR
        hi = amp * 10 ** (twist_db / 20)
        x = amp * np.sin(2 * np.pi * DTMF_ROWS[row] * t) + hi * np.sin(2 * np.pi * DTMF_COLS[col] * t)
        parts += [_fade(x.astype(np.float32), 2.0), silence(gap_secs)]
    return concat(*parts)


def sit_tone(
    freqs: Sequence[float] = SIT_HZ,
    secs: Sequence[float] = (SIT_SHORT_SECS, SIT_SHORT_SECS, SIT_LONG_SECS),
    amp: float = 0.3,
    gap_secs: float = 0.0,
) -> np.ndarray:
    """Special Information Tone: three single tones back to back (each one alone looks like a beep)."""
    parts: list[np.ndarray] = []
    for f, s in zip(freqs, secs, strict=True):
        parts += [tone(f, s, amp, fade_ms=1.0), silence(gap_secs)]
    return concat(*parts)


def white_noise(secs: float, rms: float = 0.01, seed: int | None = 0) -> np.ndarray:
    """Gaussian white noise with the given RMS."""
    return (np.random.default_rng(seed).standard_normal(_n(secs)) * rms).astype(np.float32)


def pink_noise(secs: float, rms: float = 0.01, seed: int | None = 0) -> np.ndarray:
    """1/f noise (shaped in the frequency domain), scaled to the given RMS."""
    n = _n(secs)
    if n == 0:
        return silence(0)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    x -= x.mean()
    return (x * (rms / (np.sqrt(np.mean(x**2)) + 1e-12))).astype(np.float32)


def harmonic_vowel(
    f0: float,
    secs: float,
    n_harmonics: int = 8,
    amp: float = 0.3,
    vibrato_hz: float = 0.0,
    vibrato_cents: float = 0.0,
    glide_to: float | None = None,
    jitter: float = 0.0,
    formants: Sequence[float] = (700.0, 1200.0, 2600.0),
    seed: int | None = 0,
) -> np.ndarray:
    """A sung/hummed vowel: f0 with harmonics shaped by formant peaks, optional vibrato, glide and jitter.

    The hard negative for a beep detector: voiced sound is periodic but has several harmonics; this
    gives that case without a singing TTS. `jitter` is the relative std of slow random f0 wander.
    """
    n = _n(secs)
    t = np.arange(n) / SR
    f = np.full(n, f0, dtype=np.float64)
    if glide_to is not None:
        f = f0 * (glide_to / f0) ** (t / max(secs, 1e-9))
    if vibrato_hz > 0 and vibrato_cents > 0:
        f = f * 2 ** (vibrato_cents / 1200 * np.sin(2 * np.pi * vibrato_hz * t))
    if jitter > 0:
        rng = np.random.default_rng(seed)
        w = np.cumsum(rng.standard_normal(n)) / np.sqrt(SR)  # slow random walk
        f = f * (1 + jitter * (w - w.mean()) / (w.std() + 1e-12))
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = np.zeros(n)
    for h in range(1, n_harmonics + 1):
        fh = h * f
        gain = 1 / h + sum(1.0 / (1 + ((fh - fm) / 120.0) ** 2) for fm in formants)
        x += np.where(fh < SR / 2 - 100, gain, 0.0) * np.sin(h * phase)
    x *= amp / (np.max(np.abs(x)) + 1e-12)
    return _fade(x.astype(np.float32), 10.0)


# --- combining ---------------------------------------------------------------------------------


def concat(*parts: np.ndarray) -> np.ndarray:
    """Concatenate float32 parts (an empty call gives empty audio)."""
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts]) if parts else silence(0)


def rms(x: np.ndarray) -> float:
    """Root mean square of float audio."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def active_rms(x: np.ndarray, frame_ms: float = 20.0, floor_db: float = -40.0) -> float:
    """RMS over the frames within `floor_db` of the loudest frame: the level of the sound, not of its pauses."""
    k = max(1, int(frame_ms * SR / 1000))
    m = len(x) // k
    if m == 0:
        return rms(x)
    p = np.mean(np.square(x[: m * k].reshape(m, k), dtype=np.float64), axis=1)
    on = p >= p.max() * 10 ** (floor_db / 10)
    return float(np.sqrt(p[on].mean())) if on.any() else 0.0


def mix_at_snr(
    signal: np.ndarray, noise: np.ndarray, snr_db: float, signal_rms: float | None = None
) -> np.ndarray:
    """signal + noise scaled so that (signal level / noise RMS) = snr_db.

    The signal level defaults to `active_rms(signal)`, so a short beep inside silence is measured by
    the beep itself. The noise is looped or cut to the signal's length.
    """
    level = active_rms(signal) if signal_rms is None else signal_rms
    nz = np.resize(np.asarray(noise, dtype=np.float32), len(signal))
    scale = level / (rms(nz) + 1e-12) * 10 ** (-snr_db / 20)
    return (signal + scale * nz).astype(np.float32)


def place(base: np.ndarray, x: np.ndarray, at_secs: float) -> np.ndarray:
    """Add `x` into a copy of `base` starting at at_secs (base grows if needed)."""
    i = _n(at_secs)
    out = np.zeros(max(len(base), i + len(x)), dtype=np.float32)
    out[: len(base)] = base
    out[i : i + len(x)] += x
    return out


def _bandpass_fir(low_hz: float, high_hz: float, taps: int = 129) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * high_hz / SR * np.sinc(2 * high_hz / SR * n) - 2 * low_hz / SR * np.sinc(2 * low_hz / SR * n)
    return (h * np.blackman(taps)).astype(np.float64)


def telephone_channel(
    x: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0, ulaw: bool = True
) -> np.ndarray:
    """What a PSTN call does to audio: 300-3400 Hz band-limit (linear-phase FIR) and a µ-law round trip."""
    y = np.convolve(np.asarray(x, dtype=np.float64), _bandpass_fir(low_hz, high_hz), mode="same")
    y16 = to_int16(y.astype(np.float32))
    if ulaw:
        y16 = np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(y16.tobytes())), dtype=np.int16)
    return to_float(y16)


# --- external assets -----------------------------------------------------------------------------


def speech(
    text: str,
    voice: str | None = None,
    engine: str = "espeak-ng",
    rate: int | None = None,
    pitch: int | None = None,
) -> np.ndarray:
    """Offline TTS of `text` at 8 kHz.

    espeak-ng: voice like "en-us+f3", rate in words/min (-s), pitch 0-99 (-p).
    flite: voice kal|awb|rms|slt|kal16, rate in words/min (mapped to duration_stretch),
    pitch = mean F0 in Hz (int_f0_target_mean).
    """
    if engine not in ("espeak-ng", "flite"):
        raise ValueError(f"unknown TTS engine {engine!r} (espeak-ng or flite)")
    exe = shutil.which(engine)
    if exe is None:
        raise RuntimeError(
            f"{engine} not found: install it with `apt-get install -y {engine}` (`make test` installs it)"
        )
    with tempfile.TemporaryDirectory(prefix="callgate-tts-") as tmp:
        out = Path(tmp) / "tts.wav"
        if engine == "espeak-ng":
            cmd = [exe, "-w", str(out)]
            cmd += ["-v", voice or "en-us"]
            if rate is not None:
                cmd += ["-s", str(rate)]
            if pitch is not None:
                cmd += ["-p", str(pitch)]
            cmd += ["--", text]
        else:
            cmd = [exe, "-voice", voice or "slt"]
            if rate is not None:
                cmd += ["--setf", f"duration_stretch={175.0 / rate:.3f}"]
            if pitch is not None:
                cmd += ["--setf", f"int_f0_target_mean={pitch}"]
            cmd += ["-t", text, "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{engine} failed ({res.returncode}): {res.stderr.strip()[:300]}")
        return to_float(load_audio(out))


def _asterisk_dirs() -> list[Path]:
    env = os.environ.get("CALLGATE_ASTERISK_SOUNDS")
    return [Path(d) for d in ([env] if env else []) + list(ASTERISK_SOUNDS_DIRS)]


def asterisk_prompt(name: str) -> np.ndarray:
    """An Asterisk core sound by name ("ss-noservice", "vm-theperson", "digits/5"), as float 8 kHz."""
    for d in _asterisk_dirs():
        for ext in (".wav", ".WAV", ".ulaw"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return to_float(load_audio(p))
    if not any(d.is_dir() for d in _asterisk_dirs()):
        raise RuntimeError(
            "Asterisk sounds not found: install them with `apt-get install -y asterisk-core-sounds-en-wav` "
            f"(looked in {', '.join(str(d) for d in _asterisk_dirs())})"
        )
    raise FileNotFoundError(f"no Asterisk prompt named {name!r}")


def asterisk_prompt_names() -> list[str]:
    """All prompt names available in the first Asterisk sounds directory found (sorted)."""
    for d in _asterisk_dirs():
        if d.is_dir():
            return sorted(str(p.relative_to(d).with_suffix("")) for p in d.rglob("*.wav"))
    raise RuntimeError(
        "Asterisk sounds not found: install them with `apt-get install -y asterisk-core-sounds-en-wav`"
    )


def hold_music_tracks() -> list[Path]:
    """The Asterisk music-on-hold WAVs (sorted), or RuntimeError naming the apt package."""
    tracks = sorted(Path(os.environ.get("CALLGATE_MOH_DIR", ASTERISK_MOH_DIR)).glob("*.wav"))
    if not tracks:
        raise RuntimeError(
            "hold music not found: install it with `apt-get install -y asterisk-moh-opsound-wav`"
        )
    return tracks


def hold_music(secs: float, track: int | str = 0, offset_secs: float = 0.0) -> np.ndarray:
    """`secs` of Asterisk hold music from a track (index or file stem), looping/continuing into the next."""
    tracks = hold_music_tracks()
    if isinstance(track, str):
        names = [t.stem for t in tracks]
        if track not in names:
            raise FileNotFoundError(f"no hold-music track {track!r} (have {names})")
        start = names.index(track)
    else:
        start = track % len(tracks)
    need, off, out, i = _n(secs), _n(offset_secs), [], start
    while need > 0:
        x = to_float(load_audio(tracks[i % len(tracks)]))[off:]
        off = 0
        out.append(x[:need])
        need -= len(out[-1])
        i += 1
    return concat(*out)


# --- composed scenes -----------------------------------------------------------------------------


@dataclass
class Greeting:
    """A synthetic voicemail greeting and where its beep is (ms from the start of `audio`)."""

    audio: np.ndarray  # float32, 8 kHz
    beep_onset_ms: float
    beep_offset_ms: float
    beep_hz: float

    def int16(self) -> np.ndarray:
        """PCM16 samples, ready for InputAudioRawFrame."""
        return to_int16(self.audio)


def make_voicemail_greeting(
    text: str | np.ndarray = "Hi, you've reached Sam. Please leave a message after the tone.",
    beep_hz: float = 1000.0,
    beep_secs: float = 0.5,
    tail_secs: float = 1.0,
    gap_secs: float = 0.6,
    lead_secs: float = 0.3,
    beep_amp: float = 0.4,
    voice: str | None = None,
    engine: str = "espeak-ng",
    noise_snr_db: float | None = None,
    channel: bool = True,
    seed: int = 0,
) -> Greeting:
    """lead silence + greeting (TTS of `text`, or given float audio) + gap + beep + tail silence.

    Optional pink noise at `noise_snr_db` (relative to the greeting's speech level) and the telephone
    channel. Returns the audio and the beep's true onset/offset in ms.
    """
    voice_audio = (
        speech(text, voice=voice, engine=engine) if isinstance(text, str) else np.asarray(text, np.float32)
    )
    voice_audio = voice_audio * (0.5 / (np.max(np.abs(voice_audio)) + 1e-12))
    beep = tone(beep_hz, beep_secs, beep_amp)
    onset = lead_secs + len(voice_audio) / SR + gap_secs
    x = concat(silence(lead_secs), voice_audio, silence(gap_secs), beep, silence(tail_secs))
    if noise_snr_db is not None:
        x = mix_at_snr(
            x, pink_noise(len(x) / SR, seed=seed), noise_snr_db, signal_rms=active_rms(voice_audio)
        )
    if channel:
        x = telephone_channel(x)
    return Greeting(
        audio=x, beep_onset_ms=onset * 1000, beep_offset_ms=(onset + beep_secs) * 1000, beep_hz=beep_hz
    )
