"""The barge-in analyzer on audio-time events: pause at once, then barge-in, backchannel or noise."""

from __future__ import annotations

import pytest

from processors.interruption import InterruptionAnalyzer, InterruptionParams, Verdict, is_backchannel


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
