"""Acceptance tests for the voicemail-beep detector (processors/beep.py).

Positives: single tones 400-2000 Hz, 0.15-1.0 s, 10-40 dB SNR (pink/white noise, plus quiet speech
babble), through a telephone channel (300-3400 Hz + µ-law): exactly one beep and one beep_end,
onset error <= 60 ms. Negatives (zero beeps): ringback, busy, all 16 DTMF digits, close dual tones,
SIT tones alone and before an intercept prompt, Asterisk hold music, sung/hummed vowels, and more than
60 s of mixed TTS and recorded speech. Missing espeak-ng/flite/Asterisk sounds FAIL (not skip):
`make test` installs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pipecat.frames.frames import ErrorFrame, InputAudioRawFrame
from pipecat.tests.utils import run_test

from callgate import synth
from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, to_int16
from processors.beep import BeepAnalyzer, BeepDetector, BeepEvent
from processors.frames import BeepEndFrame, BeepFrame

ONSET_TOL_MS = 60.0
END_TOL_MS = 30.0
SIT_ZONE = (1354.0, 1445.0)  # 1400 Hz sits between SIT's 1370.6 and 1428.5: reported after it ends


def _require_assets() -> None:
    missing = [f"apt-get install -y {exe}" for exe in ("espeak-ng", "flite") if shutil.which(exe) is None]
    if not Path(synth.ASTERISK_SOUNDS_DIRS[0]).is_dir():
        missing.append("apt-get install -y asterisk-core-sounds-en-wav")
    if not list(Path(synth.ASTERISK_MOH_DIR).glob("*.wav")):
        missing.append("apt-get install -y asterisk-moh-opsound-wav")
    if missing:
        pytest.fail("beep tests need offline audio assets; run `make test` or: " + "; ".join(missing))


def detect(x: np.ndarray, chunk: int = FRAME_SAMPLES, **params: float) -> list[BeepEvent]:
    """Run a fresh analyzer over float audio in `chunk`-sample pieces, flushing at the end."""
    a = BeepAnalyzer(**params)  # type: ignore[arg-type]
    pcm = to_int16(x)
    events: list[BeepEvent] = []
    for i in range(0, len(pcm), chunk):
        events += a.process(pcm[i : i + chunk])
    return events + a.flush()


def beeps(events: list[BeepEvent]) -> list[BeepEvent]:
    return [e for e in events if e.kind == "beep"]


def describe(events: list[BeepEvent]) -> str:
    return ", ".join(
        f"{e.kind}@{e.t_ms:.0f}ms onset={e.onset_ms:.0f} {e.hz:.1f}Hz {e.duration_ms:.0f}ms" for e in events
    )


def assert_no_beep(x: np.ndarray, what: str) -> None:
    ev = beeps(detect(x))
    assert not ev, f"false beep on {what}: {describe(ev)}"


# --- positives -----------------------------------------------------------------------------------

FREQS = (400.0, 650.0, 700.0, 1000.0, 1400.0, 2000.0)
DURS = (0.15, 0.3, 0.6, 1.0)
SNRS = (10.0, 20.0, 40.0)


@pytest.mark.parametrize("noise", ["pink", "white"])
@pytest.mark.parametrize("snr", SNRS)
@pytest.mark.parametrize("secs", DURS)
@pytest.mark.parametrize("hz", FREQS)
def test_beep_detected_with_onset_and_end(hz: float, secs: float, snr: float, noise: str) -> None:
    lead = 0.5
    beep = synth.tone(hz, secs, amp=0.3)
    x = synth.concat(synth.silence(lead), beep, synth.silence(0.6))
    gen = synth.pink_noise if noise == "pink" else synth.white_noise
    seed = int(hz) + int(secs * 100) + int(snr)
    x = synth.telephone_channel(
        synth.mix_at_snr(x, gen(len(x) / SAMPLE_RATE, seed=seed), snr, signal_rms=synth.rms(beep))
    )
    on_ms, off_ms = lead * 1000, (lead + secs) * 1000

    ev = detect(x)
    kinds = [e.kind for e in ev]
    assert kinds == ["beep", "beep_end"], f"{hz} Hz {secs} s {snr} dB {noise}: {describe(ev)}"
    b, e = ev
    assert abs(b.onset_ms - on_ms) <= ONSET_TOL_MS, describe(ev)
    assert abs(e.t_ms - off_ms) <= END_TOL_MS, describe(ev)
    assert abs(e.duration_ms - secs * 1000) <= END_TOL_MS + ONSET_TOL_MS
    assert abs(b.hz - hz) <= 0.01 * hz
    in_sit_zone = SIT_ZONE[0] <= hz <= SIT_ZONE[1]
    # While the tone sounds (+ one 32 ms window); SIT-frequency tones wait to rule out a SIT triple.
    assert b.t_ms <= off_ms + (260.0 if in_sit_zone and secs < 0.45 else 40.0), describe(ev)


@pytest.mark.parametrize("hz", [650.0, 1000.0])
def test_beep_detected_under_speech_babble(hz: float) -> None:
    _require_assets()
    talk = [
        ("the quick brown fox jumps over the lazy dog", "en-us+m3"),
        ("she sells sea shells by the sea shore", "en-us+f3"),
        ("we will be right back after this message", "en-gb"),
    ]
    voices = [synth.speech(t, voice=v) for t, v in talk]
    n = min(len(v) for v in voices)
    babble = np.sum([v[:n] for v in voices], axis=0)
    beep = synth.tone(hz, 0.3, 0.3)
    x = synth.concat(synth.silence(0.5), beep, synth.silence(0.7))
    x = synth.telephone_channel(synth.mix_at_snr(x, babble, 20.0, signal_rms=synth.rms(beep)))
    ev = detect(x)
    assert [e.kind for e in ev] == ["beep", "beep_end"], describe(ev)
    assert abs(ev[0].onset_ms - 500) <= ONSET_TOL_MS and abs(ev[1].t_ms - 800) <= END_TOL_MS


def test_clipped_and_quiet_beeps() -> None:
    """A beep clipped at half its amplitude (odd harmonics) and one at -40 dBFS still count."""
    for amp, clip in ((1.0, 0.5), (0.01, 1.0)):
        x = np.clip(
            synth.concat(synth.silence(0.5), synth.tone(1000.0, 0.4, amp), synth.silence(0.5)), -clip, clip
        )
        ev = detect(synth.telephone_channel(x + synth.white_noise(len(x) / SAMPLE_RATE, rms=0.0003)))
        assert [e.kind for e in ev] == ["beep", "beep_end"], f"amp {amp} clip {clip}: {describe(ev)}"


def test_asterisk_beep_after_prompt() -> None:
    _require_assets()
    lead = synth.concat(synth.asterisk_prompt("vm-intro"), synth.silence(0.2))
    x = synth.concat(lead, synth.asterisk_prompt("beep"), synth.silence(0.5))
    ev = detect(x)
    on = len(lead) / SAMPLE_RATE * 1000
    assert [e.kind for e in ev] == ["beep", "beep_end"], describe(ev)
    assert abs(ev[0].onset_ms - on) <= ONSET_TOL_MS and abs(ev[0].hz - 700) < 7
    assert abs(ev[1].duration_ms - 415) <= 40


def test_chunk_size_does_not_change_events() -> None:
    """Live 20 ms frames and replay blocks report the same audio-clock times."""
    _require_assets()
    g = synth.make_voicemail_greeting(beep_hz=700.0, beep_secs=0.415, gap_secs=0.1)
    ref = detect(g.audio)
    assert [e.kind for e in ref] == ["beep", "beep_end"], describe(ref)
    assert abs(ref[0].onset_ms - g.beep_onset_ms) <= ONSET_TOL_MS
    assert abs(ref[1].t_ms - g.beep_offset_ms) <= END_TOL_MS
    for chunk in (1, 7, 333, 4000, len(g.audio)):
        got = detect(g.audio, chunk=chunk)
        assert [(e.kind, round(e.t_ms, 3), round(e.onset_ms, 3)) for e in got] == [
            (e.kind, round(e.t_ms, 3), round(e.onset_ms, 3)) for e in ref
        ], f"chunk {chunk}"


def test_two_beeps_and_reset() -> None:
    x = synth.telephone_channel(
        synth.concat(
            synth.silence(0.3),
            synth.tone(1000, 0.3, 0.3),
            synth.silence(0.3),
            synth.tone(1000, 0.3, 0.3),
            synth.silence(0.3),
        )
    )
    ev = detect(x)
    assert [e.kind for e in ev] == ["beep", "beep_end", "beep", "beep_end"], describe(ev)
    assert abs(ev[2].onset_ms - 900) <= ONSET_TOL_MS
    a = BeepAnalyzer()
    a.process(to_int16(x[:4000]))
    a.reset()
    assert a.now_ms == 0.0


# --- a beep at the greeting's edge -----------------------------------------------------------------

EDGE_GREETINGS = (  # (text, voice, engine): the greeting's last word runs right into the tone
    ("Please leave a message after the tone", "en-us+m3", "espeak-ng"),
    ("Sorry I missed you, talk to you soon", "en-us+f3", "espeak-ng"),
    ("Please leave a message after the beep", "slt", "flite"),
)
EDGE_OFFSETS_MS = (-50, -25, 0, 10, 20, 40)  # tone onset - end of the last word (< 0: they overlap)


def _trimmed_speech(text: str, voice: str, engine: str) -> np.ndarray:
    """TTS with its leading and trailing silence cut: the last sample is the end of the last word."""
    x = synth.speech(text, voice=voice, engine=engine)
    idx = np.nonzero(np.abs(x) > 0.01 * np.max(np.abs(x)))[0]
    return x[idx[0] : idx[-1] + 1]


@pytest.mark.parametrize("offset_ms", EDGE_OFFSETS_MS)
def test_beep_at_the_greeting_edge_is_detected_like_the_grid(offset_ms: int) -> None:
    """The positive grid (every frequency, duration and SNR) with the tone starting 0-40 ms after the
    greeting's last word, or overlapping its last 25-50 ms (speech ~6 dB above the beep): one beep, one
    beep_end, the grid's onset/end tolerances, and beep_end known <= 100 ms after the tone ended
    (SIT-frequency tones: the grid's allowance)."""
    _require_assets()
    voices = [_trimmed_speech(*g) for g in EDGE_GREETINGS]
    lead = int(0.3 * SAMPLE_RATE)
    misses: list[str] = []
    errors: list[float] = []
    for n, (hz, secs, snr) in enumerate((h, d, s) for h in FREQS for d in DURS for s in SNRS):
        voice = voices[n % len(voices)]
        beep = synth.tone(hz, secs, amp=0.3)
        onset = lead + len(voice) + offset_ms * SAMPLE_RATE // 1000
        x = np.zeros(onset + len(beep) + int(0.6 * SAMPLE_RATE), np.float32)
        x[lead : lead + len(voice)] += voice * (2 * synth.rms(beep) / synth.active_rms(voice))
        x[onset : onset + len(beep)] += beep
        noise = synth.pink_noise(len(x) / SAMPLE_RATE, seed=n + 100 + offset_ms)
        x = synth.telephone_channel(synth.mix_at_snr(x, noise, snr, signal_rms=synth.rms(beep)))
        on_ms, off_ms = onset * 1000 / SAMPLE_RATE, onset * 1000 / SAMPLE_RATE + secs * 1000
        a, pcm, ev, known = BeepAnalyzer(), to_int16(x), [], {}
        for i in range(0, len(pcm), FRAME_SAMPLES):
            for e in a.process(pcm[i : i + FRAME_SAMPLES]):
                ev.append(e)
                known[e.kind] = a.now_ms
        what = f"{hz} Hz {secs} s {snr} dB: {describe(ev)} (tone {on_ms:.0f}-{off_ms:.0f})"
        if [e.kind for e in ev] != ["beep", "beep_end"]:
            misses.append(what)
            continue
        assert abs(ev[0].onset_ms - on_ms) <= ONSET_TOL_MS and abs(ev[1].t_ms - off_ms) <= END_TOL_MS, what
        assert abs(ev[0].hz - hz) <= 0.01 * hz, what
        # The message can start <= 100 ms after the tone (SIT-frequency tones wait to rule out SIT, as in the grid).
        in_sit_zone = SIT_ZONE[0] <= hz <= SIT_ZONE[1] and secs < 0.45
        assert known["beep_end"] - off_ms <= (260.0 if in_sit_zone else 100.0), what
        errors.append(abs(ev[0].onset_ms - on_ms))
    assert not misses, "\n".join(misses)
    print(f"offset {offset_ms} ms: {len(errors)} tones, onset error mean {np.mean(errors):.1f} max {max(errors):.1f} ms")


# --- negatives -----------------------------------------------------------------------------------


def test_no_beep_on_ringback_and_busy() -> None:
    assert_no_beep(synth.telephone_channel(synth.ringback(12.0)), "ringback 440+480")
    assert_no_beep(synth.telephone_channel(synth.busy(6.0)), "busy 480+620")
    assert_no_beep(synth.telephone_channel(synth.multi_tone(synth.DIAL_TONE_HZ, 3.0)), "dial tone 350+440")


@pytest.mark.parametrize("twist_db", [0.0, 4.0, -4.0])
def test_no_beep_on_dtmf(twist_db: float) -> None:
    """All 16 digits, held 0.4 s (longer than the min duration) and at normal 100 ms speed."""
    for tone_secs, gap in ((0.4, 0.1), (0.1, 0.05)):
        x = synth.dtmf(synth.DTMF_DIGITS, tone_secs=tone_secs, gap_secs=gap, twist_db=twist_db)
        assert_no_beep(synth.telephone_channel(x), f"DTMF {tone_secs}s twist {twist_db}")


def test_no_beep_on_close_dual_tones() -> None:
    """mod_avmd's test plan: pairs 50 and 100 Hz apart, 400-1950 Hz (a beat, not one tone)."""
    parts = []
    for f1 in range(400, 1951, 100):
        for df in (50, 100):
            parts += [synth.dual_tone(f1, f1 + df, 0.8), synth.silence(0.2)]
    assert_no_beep(synth.telephone_channel(synth.concat(*parts)), "dual tones")


SIT_VARIANTS = [
    (synth.SIT_HZ, (0.274, 0.274, 0.380), 0.0),
    (synth.SIT_HZ, (0.380, 0.380, 0.380), 0.0),
    (synth.SIT_ALT_HZ, (0.274, 0.380, 0.380), 0.0),
    ((985.2, 1370.6, 1776.7), (0.380, 0.274, 0.380), 0.0),
    ((913.8, 1428.5, 1776.7), (0.274, 0.274, 0.380), 0.0),
    ((950.0, 1400.0, 1800.0), (0.330, 0.330, 0.330), 0.03),  # ITU-T E.180 style, 30 ms gaps
]


@pytest.mark.parametrize("freqs,secs,gap", SIT_VARIANTS)
def test_no_beep_on_sit(freqs: tuple[float, ...], secs: tuple[float, ...], gap: float) -> None:
    _require_assets()
    sit = synth.sit_tone(freqs, secs, gap_secs=gap)
    assert_no_beep(
        synth.telephone_channel(synth.concat(synth.silence(0.3), sit, synth.silence(0.6))), f"SIT {freqs}"
    )
    x = synth.concat(synth.silence(0.3), sit, 0.8 * synth.asterisk_prompt("ss-noservice"))
    assert_no_beep(synth.telephone_channel(x), f"SIT {freqs} + ss-noservice")
    noisy = synth.mix_at_snr(x, synth.pink_noise(len(x) / SAMPLE_RATE, seed=3), 15.0)
    assert_no_beep(synth.telephone_channel(noisy), f"SIT {freqs} + ss-noservice at 15 dB SNR")


def test_no_beep_on_hold_music() -> None:
    """110 s of Asterisk hold music, including the sustained synth notes that nearly pass as beeps."""
    _require_assets()
    total = 0.0
    for track, offset, secs, channel in (
        ("macroform-cold_day", 0.0, 30.0, False),
        ("macroform-cold_day", 65.0, 45.0, True),
        ("macroform-the_simplicity", 150.0, 20.0, True),
        ("manolo_camp-morning_coffee", 55.0, 15.0, True),
    ):
        x = synth.hold_music(secs, track=track, offset_secs=offset)
        assert_no_beep(synth.telephone_channel(x) if channel else x, f"hold music {track} @{offset}s")
        total += len(x) / SAMPLE_RATE
    print(f"hold music: {total:.0f} s")
    assert total >= 30.0


@pytest.mark.parametrize("f0", [150.0, 220.0, 300.0, 400.0])
def test_no_beep_on_sung_and_hummed_vowels(f0: float) -> None:
    """Steady, vibrato and gliding vowels with 5-12 harmonics: periodic, but never a single partial."""
    parts = []
    for nh in (5, 8, 12):
        for vib in (0.0, 40.0):
            parts += [
                synth.harmonic_vowel(
                    f0,
                    1.0,
                    nh,
                    vibrato_hz=5.5,
                    vibrato_cents=vib,
                    jitter=0.003 if vib else 0.0,
                    formants=(500 + f0, 1100 + 2 * f0, 2500),
                ),
                synth.silence(0.2),
            ]
        parts += [synth.harmonic_vowel(f0, 0.8, nh, glide_to=f0 * 1.25), synth.silence(0.2)]
    assert_no_beep(synth.telephone_channel(synth.concat(*parts)), f"vowels f0={f0}")


SPEECH_TEXTS = (
    "Hi, you've reached the Miller family. We can't come to the phone right now, so please leave a message.",
    "Thank you for calling Acme Dental. Our office is currently closed. Please call back during business hours.",
    "Hello? Yes, this is Priya speaking. How can I help you today?",
    "Please hold while we connect your call. Your call is important to us, so stay on the line.",
)
ESPEAK_VOICES = (
    ("en-us", 50),
    ("en-us+f3", 70),
    ("en-gb", 30),
    ("en-us+m3", 90),
    ("en-029+f5", 60),
    ("en-gb-scotland", 40),
)
FLITE_VOICES = ("kal", "slt", "awb", "rms")
PROMPTS = (
    "vm-theperson",
    "vm-isunavail",
    "vm-nobodyavail",
    "vm-intro",
    "ss-noservice",
    "all-circuits-busy-now",
    "cannot-complete-as-dialed",
    "hello-world",
    "pls-hold-while-try",
    "queue-thankyou",
)


def test_no_beep_on_speech() -> None:
    """More than 60 s of mixed speech: espeak-ng voices, flite voices and recorded Asterisk prompts."""
    _require_assets()
    clips: list[np.ndarray] = []
    for i, (voice, pitch) in enumerate(ESPEAK_VOICES):
        clips.append(synth.speech(SPEECH_TEXTS[i % len(SPEECH_TEXTS)], voice=voice, pitch=pitch))
    for i, voice in enumerate(FLITE_VOICES):
        clips.append(synth.speech(SPEECH_TEXTS[(i + 1) % len(SPEECH_TEXTS)], engine="flite", voice=voice))
    tts_secs = sum(len(c) for c in clips) / SAMPLE_RATE
    for name in PROMPTS:
        clips.append(synth.asterisk_prompt(name))
    x = synth.concat(*[synth.concat(c, synth.silence(0.15)) for c in clips])
    secs = len(x) / SAMPLE_RATE
    print(f"speech: {secs:.1f} s ({tts_secs:.1f} s TTS, {secs - tts_secs:.1f} s Asterisk prompts)")
    assert secs >= 60.0, f"only {secs:.1f} s of speech"
    assert_no_beep(synth.telephone_channel(x), "speech")


# --- assets ----------------------------------------------------------------------------------------


def test_missing_tts_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng"):
        synth.speech("hello")


def test_missing_asterisk_sounds_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(synth, "ASTERISK_SOUNDS_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(synth, "ASTERISK_MOH_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("CALLGATE_ASTERISK_SOUNDS", raising=False)
    monkeypatch.delenv("CALLGATE_MOH_DIR", raising=False)
    with pytest.raises(RuntimeError, match="asterisk-core-sounds-en-wav"):
        synth.asterisk_prompt("beep")
    with pytest.raises(RuntimeError, match="asterisk-moh-opsound-wav"):
        synth.hold_music(1.0)


# --- Pipecat processor ---------------------------------------------------------------------------


def _frames(pcm: np.ndarray, size: int) -> list[InputAudioRawFrame]:
    return [
        InputAudioRawFrame(audio=pcm[i : i + size].tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
        for i in range(0, len(pcm) - size + 1, size)
    ]


async def test_processor_pushes_beep_then_beep_end_in_order() -> None:
    _require_assets()
    g = synth.make_voicemail_greeting(beep_hz=1000.0, beep_secs=0.5, tail_secs=0.5)
    pcm = g.int16()
    frames = _frames(pcm, FRAME_SAMPLES)
    # The exact expected stream: every audio frame forwarded, each event right after the frame that completed it.
    ref = BeepAnalyzer()
    expected: list[type] = []
    for f in frames:
        expected.append(InputAudioRawFrame)
        expected += [
            BeepFrame if e.kind == "beep" else BeepEndFrame
            for e in ref.process(np.frombuffer(f.audio, np.int16))
        ]
    assert expected.count(BeepFrame) == 1 and expected.count(BeepEndFrame) == 1

    down, _up = await run_test(BeepDetector(), frames_to_send=frames, expected_down_frames=expected)
    beep = next(f for f in down if isinstance(f, BeepFrame))
    end = next(f for f in down if isinstance(f, BeepEndFrame))
    assert down.index(beep) < down.index(end)
    assert abs(beep.onset_ms - g.beep_onset_ms) <= ONSET_TOL_MS
    assert g.beep_onset_ms < beep.t_ms < g.beep_offset_ms  # pushed while the tone is still sounding
    audio_before = sum(isinstance(f, InputAudioRawFrame) for f in down[: down.index(beep)])
    assert audio_before * 20 >= beep.t_ms  # never ahead of the audio that was forwarded
    assert abs(end.t_ms - g.beep_offset_ms) <= END_TOL_MS
    assert abs(end.duration_ms - 500) <= END_TOL_MS + ONSET_TOL_MS
    assert beep.to_event()["event"] == "beep" and end.to_event()["event"] == "beep_end"


async def test_processor_handles_big_replay_frames() -> None:
    """Frames over 200 ms go through asyncio.to_thread; events and times are the same."""
    _require_assets()
    g = synth.make_voicemail_greeting(beep_hz=650.0, beep_secs=0.3, tail_secs=0.5)
    pcm = np.concatenate([g.int16(), np.zeros(2 * SAMPLE_RATE - len(g.audio) % SAMPLE_RATE, np.int16)])
    down, _ = await run_test(BeepDetector(), frames_to_send=_frames(pcm, SAMPLE_RATE))  # 1 s frames
    events = [f for f in down if isinstance(f, BeepFrame | BeepEndFrame)]
    assert [type(f) for f in events] == [BeepFrame, BeepEndFrame]
    assert abs(events[0].onset_ms - g.beep_onset_ms) <= ONSET_TOL_MS
    assert abs(events[1].t_ms - g.beep_offset_ms) <= END_TOL_MS


async def test_processor_rejects_wrong_rate_without_crashing() -> None:
    """16 kHz audio is a pipeline misconfiguration: one ErrorFrame upstream, audio still forwarded."""
    pcm = to_int16(synth.tone(1000.0, 0.6, 0.3))
    frames = [
        InputAudioRawFrame(audio=pcm[i : i + 320].tobytes(), sample_rate=16000, num_channels=1)
        for i in range(0, 4800, 320)
    ]
    down, up = await run_test(BeepDetector(), frames_to_send=frames)
    assert sum(isinstance(f, InputAudioRawFrame) for f in down) == len(frames)
    assert not any(isinstance(f, BeepFrame | BeepEndFrame) for f in down)
    assert sum(isinstance(f, ErrorFrame) for f in up) == 1


async def test_chunked_forwarding_holds_silence_but_not_the_beep_end() -> None:
    """chunk_ms=100: 20 ms packets leave in 100 ms frames aligned on the call clock while no tone is
    tracked, but the beep's end is pushed after the same packet as with per-packet forwarding, and
    the same audio leaves in the same order."""
    _require_assets()
    g = synth.make_voicemail_greeting(beep_hz=1000.0, beep_secs=0.5, tail_secs=0.5)
    frames = _frames(g.int16(), FRAME_SAMPLES)
    per_packet, _ = await run_test(BeepDetector(), frames_to_send=frames)
    chunked, _ = await run_test(BeepDetector(chunk_ms=100), frames_to_send=frames)

    def audio_ms_at(down: list, cls: type) -> float:
        i = next(i for i, f in enumerate(down) if isinstance(f, cls))
        return sum(len(f.audio) // 2 for f in down[:i] if isinstance(f, InputAudioRawFrame)) / 8

    assert audio_ms_at(chunked, BeepEndFrame) == audio_ms_at(per_packet, BeepEndFrame)
    ends = [e for e in chunked if isinstance(e, BeepEndFrame)]
    assert len(ends) == 1 and ends[0].t_ms == next(e for e in per_packet if isinstance(e, BeepEndFrame)).t_ms
    audio = [f for f in chunked if isinstance(f, InputAudioRawFrame)]
    assert b"".join(f.audio for f in audio) == b"".join(f.audio for f in frames)
    sizes = [len(f.audio) // 2 for f in audio]
    assert sizes.count(800) >= len(frames) // 5 - 12  # most of the call leaves in 100 ms frames
    assert sizes.count(FRAME_SAMPLES) >= 10  # packets while the beep is tracked leave one by one
    clock = np.cumsum(sizes)
    for size, end in zip(sizes[:-1], clock[:-1], strict=True):  # the last one: flushed by the EndFrame
        assert size == FRAME_SAMPLES or end % 800 == 0  # chunks end on the 100 ms grid (AMD steps)


async def test_chunked_forwarding_flushes_before_other_frames_and_after_stop() -> None:
    """A non-audio frame never overtakes held audio; after Twilio's stop nothing is held."""
    from processors.frames import TwilioMarkFrame, TwilioStopFrame

    silence = np.zeros(FRAME_SAMPLES, np.int16)
    pkt = InputAudioRawFrame(audio=silence.tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
    frames = [pkt, pkt, TwilioMarkFrame(mark_name="m"), pkt, TwilioStopFrame(call_sid="CA1"), pkt]
    down, _ = await run_test(BeepDetector(chunk_ms=100), frames_to_send=frames)
    kinds = [(type(f).__name__, len(f.audio) // 2 if isinstance(f, InputAudioRawFrame) else None) for f in down]
    assert kinds == [
        ("InputAudioRawFrame", 320),
        ("TwilioMarkFrame", None),
        ("InputAudioRawFrame", 160),
        ("TwilioStopFrame", None),
        ("InputAudioRawFrame", 160),
    ]


async def test_stop_detectors_ends_the_analysis_and_coarsens_the_chunks() -> None:
    """After a StopDetectorsFrame (the message plays), a beep is no longer looked for, audio leaves in
    1 s frames (the same audio, in order), and the frame goes no further upstream."""
    from pipecat.frames.frames import Frame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    from processors.frames import StopDetectorsFrame

    _require_assets()
    g = synth.make_voicemail_greeting(beep_hz=1000.0, beep_secs=0.5, tail_secs=0.5)
    pcm = np.concatenate([np.zeros(SAMPLE_RATE, np.int16), g.int16()])
    frames = _frames(pcm, FRAME_SAMPLES)
    up_seen: list[Frame] = []

    class Stopper(FrameProcessor):
        """Asks the detector upstream to stop after the first audio frame, as a workflow does."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if direction == FrameDirection.UPSTREAM:
                up_seen.append(frame)
            await self.push_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame) and not up_seen:
                up_seen.append(frame)
                await self.push_frame(StopDetectorsFrame(), FrameDirection.UPSTREAM)

    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.tests.utils import SleepFrame

    detector = BeepDetector(chunk_ms=100)
    # the first 100 ms chunk, a pause in which the stop comes back up, then the rest
    sent = [*frames[:5], SleepFrame(0.3), *frames[5:]]
    down, up = await run_test(Pipeline([detector, Stopper()]), frames_to_send=sent)
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    assert detector.stopped and detector.chunk_ms == 1000 and not detector.passes_packets
    assert not any(isinstance(f, BeepFrame | BeepEndFrame) for f in down)  # the beep was not looked for
    assert b"".join(f.audio for f in audio) == pcm[: len(frames) * FRAME_SAMPLES].tobytes()
    # the first 100 ms chunk, the rest of the first second, then whole seconds
    assert [len(f.audio) // 2 for f in audio[:2]] == [800, 7200]
    assert {len(f.audio) // 2 for f in audio[2:-1]} == {SAMPLE_RATE}
    assert not any(isinstance(f, StopDetectorsFrame) for f in up)  # consumed by the first detector
