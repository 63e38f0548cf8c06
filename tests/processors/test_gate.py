"""The background-speech gate: learns the caller's level, rejects quieter speech, never clips the caller."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import run_test

from callgate import synth
from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, to_int16
from processors.frames import (
    BackgroundSpeechFrame,
    CallerSpeechStartedFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
)
from processors.gate import (
    WIN,
    WIN_MS,
    BackgroundSpeechGate,
    GateAnalyzer,
    GateParams,
    window_level_db,
    window_pitch_hz,
)
from processors.speech import SpeechDetector


@lru_cache(maxsize=8)
def _voice(text: str, voice: str = "en-us+m3") -> np.ndarray:
    """Offline TTS with the leading/trailing silence cut (a VAD's onset is where the speech starts)."""
    x = synth.speech(text, voice=voice)
    k = SAMPLE_RATE // 100
    p = np.mean(x[: len(x) // k * k].reshape(-1, k) ** 2, axis=1)
    on = np.flatnonzero(p >= p.max() * 1e-3)
    return x[on[0] * k : (on[-1] + 1) * k]


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return to_int16(x * (10 ** (dbfs / 20) / (synth.active_rms(x) + 1e-12)))


class _Feed:
    """Feeds a GateAnalyzer the way the processor does: windows, then the VAD's edges (oracle here)."""

    def __init__(self, gate: GateAnalyzer) -> None:
        self.gate, self.events = gate, []

    def silence(self, secs: float) -> None:
        self.audio(np.zeros(int(secs * SAMPLE_RATE), np.int16), vad=False)

    def audio(self, pcm: np.ndarray, vad: bool = True) -> tuple[float, float]:
        onset = self.gate._t_ms
        n = len(pcm) // WIN
        for i in range(n):
            self.events += self.gate.process_window(pcm[i * WIN : (i + 1) * WIN])
            if vad and i == 2:  # a VAD confirms speech after ~96 ms and dates it back to the onset
                self.events += self.gate.vad_start(onset)
        end = self.gate._t_ms
        if vad:
            self.events += self.gate.vad_end(end)
        return onset, end

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_caller_accepted_under_static_fallback_then_level_learned() -> None:
    feed = _Feed(GateAnalyzer())
    feed.silence(0.5)
    onset, _end = feed.audio(_at_level(_voice("Hello, this is Maria speaking."), -22))
    assert feed.events[0].kind == "caller_start"
    assert feed.events[0].t_ms == pytest.approx(onset)  # dated back to the VAD onset: nothing clipped
    assert "background_start" not in feed.kinds()
    assert feed.gate.baseline_db is not None
    assert -30 < feed.gate.baseline_db < -15


def test_quieter_background_speech_is_rejected_and_reported_with_its_span() -> None:
    gate = GateAnalyzer()
    feed = _Feed(gate)
    feed.audio(_at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20))
    feed.silence(2.0)
    feed.events.clear()
    onset, end = feed.audio(_at_level(_voice("And now the weather for the weekend.", "en-gb+f3"), -32))
    assert "caller_start" not in feed.kinds()
    assert feed.kinds() == ["background_start", "background_end"]
    assert feed.events[0].t_ms == pytest.approx(onset)
    assert feed.events[1].t_ms == pytest.approx(end)
    assert not gate.is_caller_speech()


def test_caller_speech_at_its_own_level_passes_after_background() -> None:
    feed = _Feed(GateAnalyzer())
    feed.audio(_at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20))
    feed.silence(1.0)
    feed.audio(_at_level(_voice("And now the weather.", "en-gb+f3"), -33))
    feed.silence(1.0)
    feed.events.clear()
    feed.audio(_at_level(_voice("Yes, that's right."), -21))
    assert feed.kinds()[0] == "caller_start"


def _peak_db(pcm: np.ndarray) -> float:
    return max(window_level_db(pcm[i * WIN : (i + 1) * WIN]) for i in range(len(pcm) // WIN))


def _with_peak(x: np.ndarray, peak_db: float) -> np.ndarray:
    pcm = _at_level(x, -30)
    return to_int16(pcm.astype(np.float32) / 32768 * 10 ** ((peak_db - _peak_db(pcm)) / 20))


def test_grace_lets_a_soft_next_word_through_only_right_after_the_caller() -> None:
    params = GateParams(open_offset_db=5.0, grace_db=4.0, grace_ms=500.0)
    opener = _at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20)

    def soft_after(pause_s: float) -> list[str]:
        feed = _Feed(GateAnalyzer(params))
        feed.audio(opener)
        base = feed.gate.baseline_db
        assert base is not None
        feed.silence(pause_s)
        feed.events.clear()
        feed.audio(_with_peak(_voice("um, okay"), base - 7))  # 7 dB under: outside the 5 dB open offset
        return feed.kinds()

    assert soft_after(0.2)[0] == "caller_start"  # within the grace period
    assert "caller_start" not in soft_after(2.0)


def test_media_mode_switches_on_with_continuous_background_speech() -> None:
    gate = GateAnalyzer()
    feed = _Feed(gate)
    feed.audio(_at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20))
    thr_normal = gate.open_threshold_db(gate._t_ms + 5000)
    tv = _at_level(_voice("Scattered showers are expected tonight and the home team scored twice.", "en-gb+f3"), -34)
    for _ in range(3):
        feed.audio(tv)
    assert gate.media_mode
    assert gate.open_threshold_db(gate._t_ms + 5000) > thr_normal


def test_caller_level_is_forgotten_after_the_rolling_window() -> None:
    gate = GateAnalyzer(GateParams(window_s=5.0))
    feed = _Feed(gate)
    feed.audio(_at_level(_voice("Hello, this is Maria speaking."), -20))
    assert gate.baseline_db is not None
    feed.silence(6.0)
    assert gate.baseline_db is None  # back to the static fallback
    assert gate.open_threshold_db() == pytest.approx(max(-35.0, gate.floor_db + 12.0))


def test_window_is_caller_flags_match_the_caller_speech() -> None:
    gate = GateAnalyzer()
    feed = _Feed(gate)
    feed.silence(0.3)
    onset, end = feed.audio(_at_level(_voice("Hello there."), -20))
    mid = onset + (end - onset) / 2
    assert gate.window_is_caller(round(mid / WIN_MS) * WIN_MS)
    assert not gate.window_is_caller(0.0)


_TV_LINES = ("And now the weather for the weekend.", "Scattered showers are expected tonight.",
             "Stay tuned for more after the break.", "Traffic is heavy on the north side.")


def _caller_then_tv(params: GateParams, tv_dbfs: float) -> tuple[GateAnalyzer, _Feed, list[bool], float]:
    """The caller speaks at -20 dBFS, then eight TV lines play quieter; returns which TV lines opened the gate
    and the caller level learned from the caller alone."""
    gate = GateAnalyzer(params)
    feed = _Feed(gate)
    feed.audio(_at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20))
    learned = gate.baseline_db
    assert learned is not None
    feed.silence(1.0)
    opened = []
    for line in _TV_LINES * 2:
        feed.events.clear()
        feed.audio(_at_level(_voice(line, "en-gb+f3"), tv_dbfs))
        feed.silence(0.5)
        opened.append("caller_start" in feed.kinds())
    return gate, feed, opened, learned


def test_background_that_gets_through_does_not_drag_the_caller_level_down() -> None:
    plain, _f, opened, learned = _caller_then_tv(GateParams(open_offset_db=8.0), -29)
    assert all(opened)  # 9 dB under the caller's active level is within this gate's 8 dB offset
    assert plain.baseline_db < learned - 2.0  # TV windows taught as the caller's: the door opens wider
    kept, _f, _opened, learned = _caller_then_tv(GateParams(open_offset_db=8.0, learn_offset_db=6.0), -29)
    assert abs(kept.baseline_db - learned) < 1.0


def test_learned_background_level_raises_the_open_threshold_and_the_caller_still_opens_at_once() -> None:
    params = GateParams(open_offset_db=8.0, learn_offset_db=6.0, bg_mid_frac=0.5)
    gate, feed, opened, _learned = _caller_then_tv(params, -29)
    assert opened[0]  # before any background was heard, the TV passes as a soft caller
    assert not any(opened[4:])  # once its level is learned, it no longer does
    assert gate.background_db is not None and gate.background_db < gate.baseline_db - 6.0
    without = GateAnalyzer(GateParams(open_offset_db=8.0, learn_offset_db=6.0))
    without._baseline = gate.baseline_db
    assert gate.open_threshold_db(gate._t_ms + 5000) > without.open_threshold_db(gate._t_ms + 5000) + 2.0
    assert gate.state()["background_db"] == pytest.approx(gate.background_db, abs=0.05)
    feed.silence(1.0)
    feed.events.clear()
    onset, _end = feed.audio(_at_level(_voice("Yes, that is right, it was on Monday."), -20))
    assert feed.events[0].kind == "caller_start"
    assert feed.events[0].t_ms == pytest.approx(onset)  # the caller is not delayed or clipped


def test_background_level_is_forgotten_with_the_rolling_window() -> None:
    params = GateParams(open_offset_db=8.0, learn_offset_db=6.0, bg_mid_frac=0.5)
    gate, feed, _opened, _learned = _caller_then_tv(params, -29)
    assert gate.background_db is not None
    feed.silence(31.0)  # the TV went off: its level no longer raises the threshold
    assert gate.background_db is None


def test_pitch_estimate_finds_the_fundamental_not_a_subharmonic_and_none_in_noise() -> None:
    t = np.arange(WIN) / SAMPLE_RATE
    vowel = sum(a * np.sin(2 * np.pi * 150.0 * k * t) for k, a in ((1, 0.5), (2, 0.3), (3, 0.2)))
    assert window_pitch_hz(to_int16(vowel)) == pytest.approx(150.0, rel=0.03)
    buzz = np.sign(np.sin(2 * np.pi * 110.0 * t)) * 0.3  # strong peaks at 2 and 3 periods too
    assert window_pitch_hz(to_int16(buzz)) == pytest.approx(110.0, rel=0.03)
    noise = np.random.default_rng(0).standard_normal(WIN) * 0.1
    assert np.isnan(window_pitch_hz(to_int16(noise)))


_CALLER_LINE = "Hello, this is Maria speaking, I am calling about my bill."
_PITCH = dict(open_offset_db=8.0, learn_offset_db=6.0, pitch_weight=1.0, pitch_free_st=2.0, pitch_clip_db=4.0)


def _opens_after_caller(params: GateParams, text: str, voice: str, dbfs: float) -> bool:
    """A low-pitched caller (espeak m3) speaks at -20 dBFS; does the next line, `dbfs`, open the gate?"""
    feed = _Feed(GateAnalyzer(params))
    feed.audio(_at_level(_voice(_CALLER_LINE), -20))
    feed.silence(1.0)
    feed.events.clear()
    feed.audio(_at_level(_voice(text, voice), dbfs))
    return "caller_start" in feed.kinds()


def test_a_background_voice_at_another_pitch_is_rejected_where_level_alone_lets_it_in() -> None:
    tv = ("And now the weather for the weekend.", "en-us+f4", -27.0)  # a high voice 7 dB under the caller
    assert _opens_after_caller(GateParams(open_offset_db=8.0, learn_offset_db=6.0), *tv)
    assert not _opens_after_caller(GateParams(**_PITCH), *tv)
    # the caller's own voice equally soft still opens at once with the pitch cue on
    assert _opens_after_caller(GateParams(**_PITCH), "Yes, and it was on Monday.", "en-us+m3", -27.0)


def test_the_pitch_cue_never_holds_back_a_tentative_opening_only_a_confirmation() -> None:
    """Over a segment's first windows the pitch is a guess, and a guess against the caller would delay a
    soft caller start while the bot talks on: a high voice 8.5 dB under a low caller, within tentative_db
    of the open threshold by level, pauses the bot; the pitch cue then refuses to confirm it."""
    feed = _Feed(GateAnalyzer(GateParams(**_PITCH, **{k: v for k, v in TWO_STAGE.items() if k != "open_offset_db"})))
    feed.audio(_at_level(_voice(_CALLER_LINE), -20))
    feed.silence(1.0)
    feed.events.clear()
    feed.audio(_at_level(_voice("And now the weather for the weekend.", "en-us+f4"), -29.5))
    assert feed.kinds()[:2] == ["caller_tentative", "caller_revoked"]
    assert "caller_start" not in feed.kinds()


def test_tentative_quiet_db_pauses_on_softer_starts_only_until_a_background_level_is_learned() -> None:
    """A start 3 dB under the tentative threshold: paused on (and confirmed by its louder rest) while no
    background level is known; once one is, it waits for the louder rest."""
    soft_start = [-33.0] * 6 + [-21.0] * 20

    def first(bg_level: float | None) -> tuple[int, str]:
        gate = _learned_caller(GateParams(**TWO_STAGE, tentative_quiet_db=4.0)).gate
        if bg_level is not None:  # a background level learned earlier in the call
            gate._bg_levels.extend([(gate._t_ms, bg_level)] * 20)
            gate._bg_level = bg_level
        return next((i, k) for i, k, _t in _decided_at(gate, _windows(soft_start, seed=6)))

    assert first(None) == (2, "caller_tentative")  # at the VAD's report
    assert first(-40.0) == (6, "caller_tentative")  # the first loud window


def test_the_callers_own_soft_speech_does_not_teach_the_background_level() -> None:
    params = GateParams(**_PITCH, bg_mid_frac=0.5, bg_learn_min_st=3.0, floor_margin_db=9.0)

    def background_after(voice: str) -> float | None:
        feed = _Feed(GateAnalyzer(params))
        feed.audio(_at_level(_voice(_CALLER_LINE), -20))
        for line in _TV_LINES:
            feed.silence(1.0)
            feed.audio(_at_level(_voice(line, voice), -36))
        return feed.gate.background_db

    assert background_after("en-us+m3") is None  # mumbling to themselves: still the caller's pitch
    assert background_after("en-us+f4") is not None  # another person: learned as background


def test_is_caller_speech_takes_the_interruption_handlers_hook_arguments() -> None:
    gate = GateAnalyzer()
    feed = _Feed(gate)
    onset, end = feed.audio(_at_level(_voice("Hello there, this is Maria."), -20), vad=True)
    assert gate.is_caller_speech(onset + 200, end)
    assert not gate.is_caller_speech(onset - 100, end)


def test_params_from_dict_rejects_unknown_names() -> None:
    assert GateParams.from_dict({"open_offset_db": 4}).open_offset_db == 4.0
    with pytest.raises(ValueError, match="unknown gate parameter"):
        GateParams.from_dict({"open_ofset_db": 4})


def _frames(pcm: np.ndarray) -> list[InputAudioRawFrame]:
    return [
        InputAudioRawFrame(audio=pcm[i : i + FRAME_SAMPLES].tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
        for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]


async def test_processor_after_the_real_vad_starts_the_caller_and_logs_the_tv() -> None:
    caller = _at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20)
    tv = _at_level(_voice("And now the weather for the weekend.", "en-gb+f3"), -34)
    gap = np.zeros(SAMPLE_RATE, np.int16)
    pcm = np.concatenate([gap[:2000], caller, gap, tv, gap])
    down, _ = await run_test(Pipeline([SpeechDetector(), BackgroundSpeechGate()]), frames_to_send=_frames(pcm))
    starts = [f for f in down if isinstance(f, CallerSpeechStartedFrame)]
    vad_starts = [f for f in down if isinstance(f, SpeechStartedFrame)]
    bg = [f for f in down if isinstance(f, BackgroundSpeechFrame)]
    assert len(vad_starts) >= 2
    assert len(starts) == 1 and starts[0].t_ms == pytest.approx(vad_starts[0].t_ms)
    tv_on = (2000 + len(caller) + SAMPLE_RATE) / 8
    assert bg and all(b.start_ms >= tv_on - 100 for b in bg)
    assert bg[0].to_event()["event"] == "background_speech"


async def test_filter_mode_passes_the_vad_frames_of_the_caller_only() -> None:
    caller = _at_level(_voice("Hello, this is Maria speaking, I am calling about my bill."), -20)
    tv = _at_level(_voice("And now the weather for the weekend.", "en-gb+f3"), -34)
    gap = np.zeros(SAMPLE_RATE, np.int16)
    pcm = np.concatenate([gap[:2000], caller, gap, tv, gap])
    gate = BackgroundSpeechGate(filter_vad=True)
    down, _ = await run_test(Pipeline([SpeechDetector(), gate]), frames_to_send=_frames(pcm))
    vad_starts = [f for f in down if isinstance(f, SpeechStartedFrame)]
    caller_starts = [f for f in down if isinstance(f, CallerSpeechStartedFrame)]
    assert len(vad_starts) == len(caller_starts) == 1  # the TV's VAD start was swallowed
    assert vad_starts[0].t_ms == caller_starts[0].t_ms
    assert [f for f in down if isinstance(f, BackgroundSpeechFrame)]



def _opened_after_ms(gate: GateAnalyzer, pcm: np.ndarray) -> float | None:
    """Feed one VAD segment window by window; how long after the VAD's report (its 3rd window) the gate
    emitted the caller's start (None: never)."""
    onset, n = gate._t_ms, len(pcm) // WIN
    for i in range(n):
        events = gate.process_window(pcm[i * WIN : (i + 1) * WIN])
        if i == 2:
            events += gate.vad_start(onset)
        if i >= 2 and any(e.kind == "caller_start" for e in events):
            return gate._t_ms - (onset + 3 * WIN_MS)
    gate.vad_end(gate._t_ms)
    return None


def test_a_far_quieter_learned_background_lets_a_soft_caller_turn_open_at_once() -> None:
    """`max_open_offset_db`: where the learned TV lies far below the caller, the threshold may drop to the
    midpoint between them (down to caller level - max_open_offset_db), so a soft turn start is not delayed."""
    base = {"open_offset_db": 8.0, "learn_offset_db": 6.0, "bg_mid_frac": 0.5, "media_extra_db": 0.0}
    out = {}
    for name, extra in (("level", {}), ("far_bg", {"max_open_offset_db": 12.0})):
        gate, feed, opened, _learned = _caller_then_tv(GateParams(**base, **extra), -46)
        assert gate.background_db is not None and gate.background_db < gate.baseline_db - 20.0
        assert not any(opened[4:])  # the TV itself stays out either way
        feed.silence(1.0)
        thr = gate.open_threshold_db(gate._t_ms + 1000)
        after = _opened_after_ms(gate, _at_level(_voice("Sorry, could you say that again?"), -30))
        out[name] = (thr, gate.baseline_db, after)
    thr_level, baseline, after_level = out["level"]
    thr_far, baseline_far, after_far = out["far_bg"]
    assert thr_level == pytest.approx(baseline - 8.0, abs=0.01)  # level only: caller level - open_offset_db
    assert baseline_far - 12.0 - 0.01 <= thr_far < thr_level - 3.0  # lower, but never below the bound
    assert after_level is None or after_level > 100.0  # too soft for the plain offset: late or never
    assert after_far is not None and after_far <= 64.0  # within the 100 ms a turn start may be delayed


def _windows(levels_db: list[float], seed: int = 0) -> np.ndarray:
    """One 32 ms window of white noise per level (dBFS RMS): the gate reads levels, not words."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(WIN * len(levels_db)).astype(np.float32)
    x /= np.sqrt(np.mean(x**2))
    gains = np.repeat([10 ** (lv / 20) * 32768 for lv in levels_db], WIN)
    return np.clip(x * gains, -32768, 32767).astype(np.int16)


def _learned_caller(params: GateParams) -> _Feed:
    """A quiet line, then a caller heard for 2 s at about -20 dBFS (syllables and gaps), then a second of
    silence: the caller level is learned and the noise floor stays the line's."""
    feed = _Feed(GateAnalyzer(params))
    feed.silence(1.0)
    feed.audio(_windows([-20.0, -20.0, -20.0, -60.0] * 16))
    feed.silence(1.0)
    assert feed.gate.baseline_db == pytest.approx(-20.0, abs=1.0)
    feed.events.clear()
    return feed


TWO_STAGE = {"open_offset_db": 8.0, "confirm_ms": 500.0, "tentative_db": 2.0, "confirm_windows": 3}


def test_one_loud_background_syllable_opens_one_stage_but_two_stages_revoke_it() -> None:
    """A TV line 12 dB under the caller with one syllable over the open threshold: the one-stage gate takes
    it for the caller; the two-stage gate pauses on it tentatively, then revokes it as background."""
    tv = [-32.0] * 4 + [-26.0] + [-32.0] * 15
    one = _learned_caller(GateParams(open_offset_db=8.0))
    one.audio(_windows(tv, seed=1))
    assert "caller_start" in one.kinds()
    two = _learned_caller(GateParams(**TWO_STAGE))
    onset, end = two.audio(_windows(tv, seed=1))
    assert two.kinds() == ["caller_tentative", "caller_revoked", "background_start", "background_end"]
    assert two.events[2].t_ms == pytest.approx(onset) and two.events[3].t_ms == pytest.approx(end)
    assert not two.gate.is_caller_speech() and not two.gate.window_is_caller(onset + 4 * WIN_MS)
    assert two.gate.baseline_db == pytest.approx(-20.0, abs=1.0)  # background never teaches the caller level


def _decided_at(gate: GateAnalyzer, pcm: np.ndarray) -> list[tuple[int, str, float]]:
    """Feed one VAD segment as _Feed does (the VAD reports it at its 3rd window, dated to the onset);
    each event with the index of the window during which it was emitted."""
    onset, out = gate._t_ms, []
    for i in range(len(pcm) // WIN):
        events = gate.process_window(pcm[i * WIN : (i + 1) * WIN])
        if i == 2:
            events += gate.vad_start(onset)
        out += [(i, e.kind, e.t_ms - onset) for e in events]
    return out


def test_two_stages_react_at_once_to_a_soft_caller_start_and_confirm_it_from_its_onset() -> None:
    """The caller's first syllables 1.5 dB under the open threshold, then their usual level: the tentative
    opening comes at the VAD's report (dated back to the onset) and the confirmation keeps that start;
    the one-stage gate waits for the first loud window."""
    soft_start = [-29.5] * 6 + [-21.0] * 20
    one = _decided_at(_learned_caller(GateParams(open_offset_db=8.0)).gate, _windows(soft_start, seed=2))
    assert [(i, k) for i, k, _t in one][:1] == [(6, "caller_start")]  # the first loud window
    assert one[0][2] == pytest.approx(0.0)  # dated back to the onset too
    two_gate = _learned_caller(GateParams(**TWO_STAGE)).gate
    two = _decided_at(two_gate, _windows(soft_start, seed=2))
    assert [(i, k) for i, k, _t in two][:2] == [(2, "caller_tentative"), (8, "caller_start")]  # VAD report; 3rd loud window
    assert two[0][2] == pytest.approx(0.0) and two[1][2] == pytest.approx(0.0)
    assert "caller_revoked" not in [k for _i, k, _t in two]
    assert two_gate.window_is_caller(two_gate._t_ms - 10 * WIN_MS)


def test_two_stage_decides_within_confirm_ms_and_at_the_vad_end() -> None:
    """Unconfirmed after confirm_ms: revoked while the VAD still hears speech; a VAD segment that ends
    first revokes it then."""
    gate = _learned_caller(GateParams(**{**TWO_STAGE, "confirm_ms": 200.0})).gate
    events = []
    for i in range(20):  # one loud window, then quiet speech, VAD on from the start
        events += gate.process_window(_windows([-26.0 if i == 3 else -33.0], seed=i))
        if i == 2:
            events += gate.vad_start(gate._t_ms - 3 * WIN_MS)
    tent = next(k for k, e in enumerate(events) if e.kind == "caller_tentative")
    rev = next(k for k, e in enumerate(events) if e.kind == "caller_revoked")
    assert tent < rev and events[rev].t_ms - (gate._t_ms - 16 * WIN_MS) <= 200.0 + WIN_MS
    short = _learned_caller(GateParams(**TWO_STAGE))
    short.audio(_windows([-33.0, -26.0, -33.0, -33.0], seed=3))
    assert short.kinds()[:2] == ["caller_tentative", "caller_revoked"]


def test_a_soft_first_word_and_a_short_pause_keep_one_tentative_opening_with_bridge_ms() -> None:
    """A soft first word ("So...") that reaches the tentative level but not the confirmation, a 320 ms
    pause, then the caller's usual level: without a bridge the opening is revoked at the word's end (the
    bot resumes over the caller) and the turn starts at the second word; with one, the same opening goes
    on and is confirmed from the first word's onset. A pause longer than the bridge still revokes."""
    word, rest = [-30.5, -29.5, -30.0, -30.5], [-21.0] * 12

    def run(bridge_ms: float, pause_s: float) -> tuple[_Feed, float]:
        feed = _learned_caller(GateParams(**TWO_STAGE, bridge_ms=bridge_ms))
        onset, _ = feed.audio(_windows(word, seed=4))
        feed.silence(pause_s)
        if bridge_ms and pause_s * 1000 < bridge_ms:  # the bot stays paused; the endpointer is not held
            assert feed.gate.tentative_open and not feed.gate.tentative_heard
        feed.audio(_windows(rest, seed=5))
        return feed, onset

    def caller(feed: _Feed) -> list[str]:
        return [k for k in feed.kinds() if k.startswith("caller_")]

    plain, onset = run(0.0, 0.32)
    assert caller(plain)[:4] == ["caller_tentative", "caller_revoked", "caller_tentative", "caller_start"]
    assert next(e for e in plain.events if e.kind == "caller_start").t_ms > onset + 300
    bridged, onset = run(450.0, 0.32)
    assert caller(bridged)[:2] == ["caller_tentative", "caller_start"]
    assert bridged.events[1].t_ms == pytest.approx(onset)  # the turn's audio is heard from the first word
    long_pause, _ = run(450.0, 0.8)
    assert long_pause.kinds()[:4] == ["caller_tentative", "caller_revoked", "background_start", "background_end"]


def test_an_opening_that_times_out_just_after_the_callers_first_loud_window_goes_on_with_rearm_ms() -> None:
    """The bot is paused on a TV (one syllable at the tentative level, then quieter); the caller starts
    loud just before that opening's time limit, dips, and goes on. Without rearm the opening is revoked
    inside the caller's first words (the bot resumes over them) and a new one follows; with it the same
    opening goes on from the caller's window and is confirmed there, the TV before it a background span."""
    levels = [-29.5] + [-33.0] * 14 + [-22.0, -31.0, -22.0, -22.0] + [-21.0] * 6
    params = {**TWO_STAGE, "confirm_windows": 2}

    def run(rearm_ms: float) -> tuple[list[tuple[int, str, float]], float]:
        gate = _learned_caller(GateParams(**params, rearm_ms=rearm_ms)).gate
        onset = gate._t_ms
        return _decided_at(gate, _windows(levels, seed=6)), onset

    plain, _ = run(0.0)
    assert [k for _i, k, _t in plain if k.startswith("caller_")] == [
        "caller_tentative", "caller_revoked", "caller_tentative", "caller_start"]
    rearmed, _ = run(160.0)
    kinds = [k for _i, k, _t in rearmed]
    assert [k for k in kinds if k.startswith("caller_")] == ["caller_tentative", "caller_start"]
    start = next(t for _i, k, t in rearmed if k == "caller_start")
    assert 12 * WIN_MS <= start <= 15 * WIN_MS  # near the caller's first loud window (15), not the TV's onset
    span = [t for _i, k, t in rearmed if k.startswith("background_")]
    assert span == [pytest.approx(0.0), pytest.approx(start)]


async def test_processor_pushes_the_tentative_and_revoked_frames() -> None:
    from processors.frames import CallerSpeechRevokedFrame, CallerSpeechTentativeFrame

    gate = _learned_caller(GateParams(**TWO_STAGE)).gate  # a caller level learned earlier in the call
    t = gate._t_ms
    pcm = np.concatenate([np.zeros(1600, np.int16), _windows([-32.0] * 4 + [-26.0] + [-32.0] * 15, seed=4)])
    end_ms = t + len(pcm) / 8
    frames = [*_frames(pcm[:2400]), SpeechStartedFrame(t_ms=t + 200.0), *_frames(pcm[2400:]),
              SpeechEndedFrame(t_ms=end_ms)]
    down, _ = await run_test(Pipeline([BackgroundSpeechGate(gate, filter_vad=True)]), frames_to_send=frames)
    kinds = [type(f) for f in down if isinstance(f, CallerSpeechTentativeFrame | CallerSpeechRevokedFrame
                                                  | CallerSpeechStartedFrame | SpeechStartedFrame)]
    assert kinds == [CallerSpeechTentativeFrame, CallerSpeechRevokedFrame]  # no user turn, no VAD start passed on
    bg = [f for f in down if isinstance(f, BackgroundSpeechFrame)]
    assert len(bg) == 1 and bg[0].start_ms == pytest.approx(t + 200.0, abs=WIN_MS) and bg[0].end_ms == pytest.approx(end_ms)


def test_confirm_quiet_db_asks_more_of_a_confirmation_only_until_a_background_level_is_learned() -> None:
    """Speech 1 dB over the open threshold: two stages confirm it; with confirm_quiet_db 3 they revoke it
    while no background level is known, and confirm it again once one is."""
    seg = _windows([-27.0] * 12, seed=5)
    plain = _learned_caller(GateParams(**TWO_STAGE))
    plain.audio(seg)
    assert plain.kinds()[:2] == ["caller_tentative", "caller_start"]
    strict = _learned_caller(GateParams(**TWO_STAGE, confirm_quiet_db=3.0))
    strict.audio(seg)
    assert strict.gate.background_db is None and strict.kinds()[:2] == ["caller_tentative", "caller_revoked"]
    strict.gate._bg_level = -34.0  # a background level learned meanwhile
    strict.events.clear()
    strict.audio(seg)
    assert strict.kinds()[:2] == ["caller_tentative", "caller_start"]


def test_revoked_openings_teach_the_background_level_only_when_learn_revoked_is_set() -> None:
    """The caller's own soft phrases, each opened tentatively and revoked (no background level known, so
    confirming asks 3 dB more): learned as background, they raise the open threshold over the rest of
    the call; with learn_revoked off the gate keeps no background level and its threshold."""
    params = {**TWO_STAGE, "confirm_quiet_db": 3.0, "bg_mid_frac": 0.5}
    soft = [_windows([-27.0] * 12, seed=6 + k) for k in range(3)]
    taught = _learned_caller(GateParams(**params))
    kept = _learned_caller(GateParams(**params, learn_revoked=False))
    thr0 = kept.gate.open_threshold_db()
    for feed in (taught, kept):
        for seg in soft:
            feed.audio(seg)
            feed.silence(1.0)
        assert feed.kinds().count("caller_revoked") >= 2
    assert taught.gate.background_db == pytest.approx(-27.0, abs=1.5)
    assert taught.gate.open_threshold_db() > thr0 + 2.0
    assert kept.gate.background_db is None and kept.gate.open_threshold_db() == pytest.approx(thr0)


def test_a_revoked_opening_at_the_callers_own_pitch_does_not_teach_the_background_level() -> None:
    """learn_revoked with the pitch guard (the agent preset): soft lines opened tentatively and revoked
    teach the background level when another person says them, not when the caller mumbles them, so the
    caller's own soft words never raise the bar for their next turn; without the guard they do."""

    def background_after(voice: str, guard_st: float) -> float | None:
        two_stage = {k: v for k, v in TWO_STAGE.items() if k != "open_offset_db"}
        params = GateParams(**_PITCH, **two_stage, confirm_extra_db=2.0, bg_mid_frac=0.5, floor_margin_db=9.0,
                            learn_revoked=True, bg_learn_min_st=guard_st)
        feed = _Feed(GateAnalyzer(params))
        feed.audio(_at_level(_voice(_CALLER_LINE), -20))
        feed.events.clear()
        for line in _TV_LINES:
            feed.silence(1.0)
            feed.audio(_at_level(_voice(line, voice), -29.5))
        assert feed.kinds().count("caller_revoked") >= 4 and "caller_start" not in feed.kinds()
        return feed.gate.background_db

    assert background_after("en-us+m3", 3.0) is None
    assert background_after("en-us+f4", 3.0) == pytest.approx(-26.0, abs=1.5)
    assert background_after("en-us+m3", 0.0) is not None


def test_the_quiet_line_confirmation_margin_expires_on_a_line_that_stays_without_background() -> None:
    """While no background level is known, confirming asks confirm_quiet_db more (the first TV of a call
    is where most background got through), but only for confirm_quiet_ms into the call: on a line still
    without background by then, a soft caller turn 7 dB under their level is confirmed, not revoked."""
    soft = [-27.0] * 12

    def soft_turns(quiet_ms: float) -> list[str]:
        feed = _learned_caller(GateParams(**TWO_STAGE, confirm_quiet_db=3.0, confirm_quiet_ms=quiet_ms))
        assert feed.gate._t_ms < 6000
        kinds = []
        for k in range(2):  # one before 6 s into the call, one after
            feed.events.clear()
            feed.audio(_windows(soft, seed=7 + k))
            kinds.append("caller_start" if "caller_start" in feed.kinds() else "caller_revoked")
            feed.silence(3.0)
        assert feed.gate.background_db is None
        return kinds

    assert soft_turns(6000.0) == ["caller_revoked", "caller_start"]
    assert soft_turns(0.0) == ["caller_revoked", "caller_revoked"]
