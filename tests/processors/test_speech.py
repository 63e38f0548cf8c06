"""SpeechAnalyzer's start/stop hangover and its early `candidate` events (voice the start has not
confirmed yet), on given confidences and on real Silero over synthetic speech."""

from __future__ import annotations

import numpy as np

from callgate import synth
from callgate.audio import to_int16
from processors.speech import SpeechAnalyzer, SpeechEvent, _Window

LOUD = np.ones(256, dtype=np.int16)


def decide(analyzer: SpeechAnalyzer, confidences: list[float]) -> list[SpeechEvent]:
    """Run the hangover over 32 ms windows with these Silero confidences."""
    windows = [_Window(32.0 * i, 32.0 * (i + 1), LOUD) for i in range(len(confidences))]
    return analyzer._decide(windows, confidences)


def test_a_voiced_run_is_reported_as_a_candidate_before_its_start_and_a_blip_as_dropped() -> None:
    analyzer = SpeechAnalyzer(report_candidates=True)
    #        blip (1 window)   quiet    voiced run of 4 windows: start after 3 (96 ms)
    conf = [0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9] + [0.1] * 8
    events = decide(analyzer, conf)
    assert events == [
        SpeechEvent("candidate", 0.0),
        SpeechEvent("candidate_dropped", 32.0),
        SpeechEvent("candidate", 128.0),
        SpeechEvent("start", 128.0),
        SpeechEvent("end", 256.0),
    ]


def test_candidates_are_not_reported_by_default_or_while_speaking() -> None:
    conf = [0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9] + [0.1] * 8
    plain = decide(SpeechAnalyzer(), conf)
    assert [e.kind for e in plain] == ["start", "end"]
    with_candidates = decide(SpeechAnalyzer(report_candidates=True), conf)
    assert [e for e in with_candidates if e.kind in ("start", "end")] == plain
    # the dip inside the utterance (window 8) is no candidate: the caller is already speaking
    assert [e.kind for e in with_candidates].count("candidate") == 2


def test_silero_reports_a_resumed_phrase_as_a_candidate_one_window_after_it_begins() -> None:
    pcm = to_int16(
        synth.concat(
            synth.silence(0.3),
            synth.speech("Hello."),
            synth.silence(0.45),
            synth.speech("Please leave a message."),
            synth.silence(1.0),
        )
    )
    analyzer = SpeechAnalyzer(report_candidates=True)
    known: list[tuple[SpeechEvent, float]] = []
    for i in range(0, len(pcm) - 159, 160):
        known += [(e, (i + 160) / 8) for e in analyzer.process(pcm[i : i + 160])]
    starts = [(e, at) for e, at in known if e.kind == "start"]
    assert len(starts) == 2, known
    second, start_known_at = starts[1]
    cand, cand_known_at = next((e, at) for e, at in known if e.kind == "candidate" and e.t_ms == second.t_ms)
    # the candidate is known as soon as the first voiced window is scored; the start ~64 ms later
    assert cand_known_at <= cand.t_ms + 32 + 20
    assert start_known_at - cand_known_at >= 60
