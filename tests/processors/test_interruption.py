"""The barge-in analyzer on audio-time events: pause at once, then barge-in, backchannel or noise."""

from __future__ import annotations

import numpy as np
import pytest

from processors.interruption import (
    InterruptionAnalyzer,
    InterruptionParams,
    Verdict,
    frame_level_db,
    frame_logmel,
    is_backchannel,
    shipped_cue,
)


def analyzer(**kw) -> InterruptionAnalyzer:
    a = InterruptionAnalyzer(InterruptionParams(**kw))
    a.set_bot_speaking(True)
    return a


def run_ticks(a: InterruptionAnalyzer, start: float, stop: float, step: float = 20.0):
    t = start
    while t <= stop:
        d = a.tick(t)
        if d:
            return d
        t += step
    return None


@pytest.mark.parametrize("text", ["uh-huh", "Uh huh.", "mm-hmm", "yeah", "Right.", "okay", "OK", "yeah, right", "mhm"])
def test_continuers_are_backchannels(text):
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["wait", "no stop", "yeah but I need to change it", "what", "okay so tell me more", ""])
def test_words_that_take_the_floor_are_not_backchannels(text):
    assert not is_backchannel(text)


def test_speech_over_bot_pauses_then_long_speech_is_a_barge_in():
    a = analyzer(barge_in_min_ms=500)
    d = a.speech_start(1000, 1110)
    assert d and d.verdict is Verdict.PAUSE
    d = run_ticks(a, 1120, 2000)
    assert d and d.verdict is Verdict.BARGE_IN and d.t_ms == pytest.approx(1500, abs=20)


def test_words_confirm_a_barge_in_before_the_duration_does():
    a = analyzer(barge_in_min_ms=500)
    a.speech_start(1000, 1100)
    d = a.transcript("wait", False, 1300)
    assert d and d.verdict is Verdict.BARGE_IN and d.t_ms == 1300


def test_short_backchannel_resumes_without_barge_in():
    a = analyzer()
    a.speech_start(1000, 1100)
    assert a.speech_end(1380, 1600) is None
    d = a.transcript("uh-huh", True, 1700)
    assert d and d.verdict is Verdict.BACKCHANNEL


def test_backchannel_transcript_extends_the_barge_in_limit():
    a = analyzer(barge_in_min_ms=300, backchannel_max_ms=900)
    a.speech_start(1000, 1100)
    a.transcript("mm-hmm", False, 1400)
    assert run_ticks(a, 1420, 1800) is None  # longer than 300 ms, but it is a continuer
    a.speech_end(1750, 1950)
    d = a.transcript("mm-hmm", True, 2000)
    assert d and d.verdict is Verdict.BACKCHANNEL


def test_short_sound_without_words_is_noise():
    a = analyzer(transcript_wait_ms=500)
    a.speech_start(1000, 1100)
    a.speech_end(1250, 1450)
    d = run_ticks(a, 1460, 2000)
    assert d and d.verdict is Verdict.NOISE and d.t_ms >= 1750


def test_speech_the_stt_finalizes_without_words_is_noise_at_once():
    a = analyzer()
    a.speech_start(1000, 1100)
    a.speech_end(1300, 1500)
    d = a.transcript("", True, 1560)
    assert d and d.verdict is Verdict.NOISE and d.t_ms == 1560


def test_confirmed_barge_in_that_was_only_a_cough_resumes():
    a = analyzer(barge_in_min_ms=300, transcript_wait_ms=400)
    a.speech_start(1000, 1100)
    assert run_ticks(a, 1120, 1400).verdict is Verdict.BARGE_IN
    a.speech_end(1450, 1650)
    d = run_ticks(a, 1660, 2200)
    assert d and d.verdict is Verdict.FALSE_INTERRUPTION


def test_no_decision_when_the_bot_is_silent_or_the_gate_says_background():
    a = InterruptionAnalyzer()
    assert a.speech_start(1000, 1100) is None  # bot silent: an ordinary user turn

    class NotCaller:
        def is_caller_speech(self, onset_ms: float, now_ms: float) -> bool:
            return False

    b = InterruptionAnalyzer(gate=NotCaller())
    b.set_bot_speaking(True)
    assert b.speech_start(1000, 1100) is None


def test_a_tentative_gate_opening_pauses_the_bot_and_its_revocation_resumes_it():
    """The two-stage gate: its tentative opening pauses at once; revoked (background), the bot resumes
    without a clear, and the TV's words heard meanwhile never barge in."""
    a = analyzer(barge_in_min_ms=500)
    d = a.caller_tentative(1000, 1064)
    assert d and d.verdict is Verdict.PAUSE and d.onset_ms == 1000
    assert a.transcript("and now the weather for the weekend", False, 1300) is None
    assert run_ticks(a, 1300, 1500) is None  # no duration barge-in while the gate has not confirmed
    d = a.caller_revoked(1520)
    assert d and d.verdict is Verdict.BACKGROUND and a.state == "idle"
    assert a.caller_revoked(1600) is None  # once


def test_a_confirmed_tentative_opening_goes_on_as_caller_speech_over_the_bot():
    a = analyzer(barge_in_min_ms=500)
    assert a.caller_tentative(1000, 1064).verdict is Verdict.PAUSE
    assert a.speech_start(1000, 1128) is None  # the gate's confirmation: still the same pause
    assert a.caller_revoked(1200) is None  # (a late revocation of a confirmed opening changes nothing)
    d = run_ticks(a, 1140, 2000)
    assert d and d.verdict is Verdict.BARGE_IN and d.t_ms == pytest.approx(1500, abs=20)
    b = analyzer()
    b.set_bot_speaking(False)
    assert b.caller_tentative(1000, 1064) is None  # bot silent: nothing to pause


def test_one_unsure_word_is_a_continuer_but_a_floor_word_interrupts():
    a = analyzer()
    a.speech_start(1000, 1100)
    a.speech_end(1400, 1600)
    d = a.transcript("a ha", True, 1700)  # an offline STT's "uh-huh"
    assert d and d.verdict is Verdict.BACKCHANNEL
    b = analyzer()
    b.speech_start(1000, 1100)
    d = b.transcript("wait", False, 1350)
    assert d and d.verdict is Verdict.BARGE_IN


class FixedCue:
    """Stands in for the trained cue: a fixed probability after `frames` frames (records what it saw)."""

    def __init__(self, p: float, frames: int = 3) -> None:
        self.p, self.frames, self.seen = p, frames, []

    def probability(self, levels, mels) -> float:
        self.seen.append((levels, mels))
        return self.p


def tone(dbfs: float, n: int = 160, hz: float = 300.0) -> np.ndarray:
    amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / 8000)).astype(np.int16)


def feed(a: InterruptionAnalyzer, frames: list[np.ndarray], start_ms: float = 1000.0):
    out = []
    for i, f in enumerate(frames):
        d = a.audio(f, start_ms + 20 * i)
        if d:
            out.append(d)
    return out


def test_a_confident_early_cue_clears_before_any_words_at_the_sounds_onset():
    a = analyzer(early_threshold=0.7)
    a.cue = FixedCue(0.9, frames=3)
    quiet, loud = np.zeros(160, np.int16), tone(-20)
    pause, d = feed(a, [quiet, quiet, loud, loud, loud, loud])
    assert pause.verdict is Verdict.PAUSE and pause.t_ms == 1060  # the bot falls silent at the first frame
    assert d.verdict is Verdict.BARGE_IN and a.early
    assert d.onset_ms == 1040 and d.t_ms == 1100  # onset at the first loud frame, decided 3 frames later
    levels, mels = a.cue.seen[0]
    assert len(levels) == 3 and mels.shape == (3, 12)
    assert a.speech_start(1040, 1140) is None and a.vad_seen  # the VAD catching up changes nothing


def test_an_unsure_early_cue_leaves_the_decision_to_words():
    a = analyzer(early_threshold=0.7)
    a.cue = FixedCue(0.4, frames=3)
    assert [d.verdict for d in feed(a, [tone(-20)] * 5)] == [Verdict.PAUSE]
    assert a.speech_start(1000, 1100) is None and a.vad_seen  # paused already
    assert run_ticks(a, 1100, 1900) is None  # the VAD hears speech: the pause holds while words are awaited
    d = a.transcript("wait", False, 1300)
    assert d and d.verdict is Verdict.BARGE_IN and not a.early


def test_a_continuer_the_early_cue_passes_still_resumes_without_a_clear():
    a = analyzer(early_threshold=0.7)
    a.cue = FixedCue(0.2, frames=3)
    feed(a, [tone(-20)] * 4)
    a.speech_start(1000, 1100)
    a.speech_end(1300, 1500)
    d = a.transcript("uh-huh", True, 1600)
    assert d and d.verdict is Verdict.BACKCHANNEL
    assert not any(x.verdict is Verdict.BARGE_IN for x in a.decisions)


def test_an_early_barge_in_on_a_sound_the_vad_never_heard_resumes_the_bot():
    a = analyzer(early_threshold=0.7, early_false_ms=600)
    a.cue = FixedCue(0.9, frames=3)
    _, d = feed(a, [tone(-20)] * 3 + [np.zeros(160, np.int16)] * 5)
    assert d.verdict is Verdict.BARGE_IN
    assert run_ticks(a, 1100, 1580) is None
    d = run_ticks(a, 1600, 1700)
    assert d and d.verdict is Verdict.FALSE_INTERRUPTION and a.state == "idle"


def test_frames_below_the_callers_level_or_without_bot_speech_never_start_the_cue():
    class Gate:
        floor_db = -70.0

        def open_threshold_db(self, t_ms=None) -> float:
            return -20.0

    a = analyzer(early_threshold=0.7)
    a.cue, a.level_gate = FixedCue(0.9, frames=3), Gate()
    assert feed(a, [tone(-30)] * 6) == []  # a TV across the room: below the gate's threshold
    b = InterruptionAnalyzer(InterruptionParams(early_threshold=0.7))
    b.cue = FixedCue(0.9, frames=3)
    assert feed(b, [tone(-20)] * 6) == []  # the bot is silent: an ordinary turn, not a barge-in


def test_one_sound_gets_one_early_look_until_the_line_is_quiet_again():
    a = analyzer(early_threshold=0.7, early_rearm_ms=100)
    a.cue = FixedCue(0.3, frames=3)
    feed(a, [tone(-20)] * 10)
    assert len(a.cue.seen) == 1
    assert run_ticks(a, 1200, 1500).verdict is Verdict.NOISE  # never VAD speech: the bot resumes
    feed(a, [np.zeros(160, np.int16)] * 5 + [tone(-20)] * 3, start_ms=1500)
    assert len(a.cue.seen) == 2


def test_an_early_pause_the_cue_and_the_vad_never_confirm_resumes_as_noise():
    a = analyzer(early_threshold=0.7, early_novad_ms=450)
    a.cue = FixedCue(0.3, frames=3)
    (pause,) = feed(a, [tone(-20)] * 2 + [np.zeros(160, np.int16)] * 3)  # a click, a door
    assert pause.verdict is Verdict.PAUSE
    assert run_ticks(a, 1100, 1440) is None
    d = run_ticks(a, 1450, 1600)
    assert d and d.verdict is Verdict.NOISE and d.t_ms == 1450


def test_the_shipped_cue_scores_200_ms_of_audio_in_the_unit_interval():
    cue = shipped_cue()
    assert cue.frames == 10
    x = tone(-15, 1600)
    frames = [x[i : i + 160] for i in range(0, 1600, 160)]
    p = cue.probability(np.array([frame_level_db(f) for f in frames]), np.stack([frame_logmel(f) for f in frames]))
    assert 0.0 <= p <= 1.0


async def test_words_that_make_a_barge_in_follow_the_barge_in_frame_downstream():
    """The workflow opens the caller's turn on BargeInFrame: the final that decided it must come after
    it, or the workflow sees words with no caller turn open and drops them (the call then waits forever)."""
    from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame
    from pipecat.tests.utils import run_test

    from processors.agent_frames import BargeInFrame, BotPlaybackFrame
    from processors.frames import SpeechEndedFrame, SpeechStartedFrame
    from processors.interruption import InterruptionProcessor

    quiet = np.zeros(160, np.int16).tobytes()  # 20 ms below any caller level: the early cue stays out

    def audio(n: int) -> list:
        return [InputAudioRawFrame(audio=quiet, sample_rate=8000, num_channels=1) for _ in range(n)]

    frames = [BotPlaybackFrame(speaking=True, t_ms=0.0), *audio(5), SpeechStartedFrame(t_ms=100.0), *audio(10)]
    frames += [SpeechEndedFrame(t_ms=300.0), TranscriptionFrame("yes I can talk now", "caller", "t")]
    down, _ = await run_test(InterruptionProcessor(), frames_to_send=frames)
    kinds = [type(f) for f in down if isinstance(f, BargeInFrame | TranscriptionFrame)]
    assert kinds == [BargeInFrame, TranscriptionFrame], kinds


def test_a_bot_turn_whose_audio_starts_while_the_caller_talks_pauses_and_yields_to_them():
    """A greeting that took long to synthesize does not start over a caller who is already talking."""
    a = InterruptionAnalyzer(InterruptionParams(barge_in_min_ms=1200))
    assert a.speech_start(1000, 1100) is None  # the bot is silent: an ordinary user turn, no decision
    d = a.set_bot_speaking(True, 1600)
    assert d and d.verdict is Verdict.PAUSE and d.onset_ms == 1000 and d.t_ms == 1600
    d = run_ticks(a, 1620, 3000)  # the caller's speech is dated from its own onset, not the bot's start
    assert d and d.verdict is Verdict.BARGE_IN and d.t_ms == pytest.approx(2200, abs=20)


def test_a_bot_turn_after_the_caller_stopped_starts_normally():
    a = InterruptionAnalyzer(InterruptionParams())
    a.speech_start(1000, 1100)
    a.speech_end(1800, 1900)
    assert a.set_bot_speaking(True, 2500) is None and a.state == "idle"
    assert a.set_bot_speaking(True, 2600) is None  # already speaking: not a new start


def test_background_speech_the_gate_rejects_does_not_hold_a_starting_bot_turn():
    class NotCaller:
        def is_caller_speech(self, onset_ms: float, now_ms: float) -> bool:
            return False

    a = InterruptionAnalyzer(InterruptionParams(), gate=NotCaller())
    a.speech_start(1000, 1100)
    assert a.set_bot_speaking(True, 1200) is None and a.state == "idle"


@pytest.mark.parametrize("words", ["uh-huh", "Hello?"])
def test_a_bot_turn_that_starts_during_a_continuer_or_a_hello_resumes_once_it_ends(words):
    """A "Hello?" that meets the greeting's start is the caller's opening, which the greeting answers."""
    a = InterruptionAnalyzer(InterruptionParams())
    a.speech_start(1000, 1100)
    assert a.set_bot_speaking(True, 1150).verdict is Verdict.PAUSE
    a.speech_end(1400, 1500)
    d = a.transcript(words, True, 1600)
    assert d and d.verdict is Verdict.BACKCHANNEL  # resume, no clear


def test_hello_later_in_the_bots_turn_still_takes_the_floor():
    a = InterruptionAnalyzer(InterruptionParams())
    a.set_bot_speaking(True, 1000)
    a.speech_start(3000, 3100)
    d = a.transcript("hello?", False, 3300)
    assert d and d.verdict is Verdict.BARGE_IN


def test_an_opener_with_more_words_takes_the_floor_from_the_greeting():
    a = InterruptionAnalyzer(InterruptionParams())
    a.speech_start(1000, 1100)
    a.set_bot_speaking(True, 1150)
    d = a.transcript("hello I need to cancel", False, 1700)
    assert d and d.verdict is Verdict.BARGE_IN


@pytest.mark.parametrize(("text", "openers", "floor"), [
    ("hello", False, True), ("hello", True, False), ("hi there", True, False), ("hey wait", True, True),
    ("yeah", True, False), ("no", True, True),
])
def test_takes_floor_lets_greeting_words_pass_only_as_an_opening(text, openers, floor):
    from processors.interruption import takes_floor

    assert takes_floor(text, openers=openers) is floor
