"""DecisionLayer on synthetic probability streams: thresholds, windows, delays, waits, first-wins,
timeouts; presets load; AmdDecisionProcessor emits exactly one verdict frame."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import Frame
from pipecat.tests.utils import run_test

from processors.amd_decision import (
    AmdDecisionProcessor,
    DecisionLayer,
    DetectorConfig,
    SpeechState,
    Verdict,
    load_presets,
)
from processors.frames import AmdProbabilityFrame, AmdVerdictFrame, SpeechEndedFrame, SpeechStartedFrame


def stream(
    layer: DecisionLayer,
    values: list[dict[str, float]],
    speech: dict[int, tuple[str, float]] | None = None,
) -> Verdict | None:
    """Feed steps (t = 100, 200, ...); speech[i] = (event, t_ms) is applied before step i."""
    speech = speech or {}
    for i, probs in enumerate(values):
        if i in speech:
            ev, t = speech[i]
            if ev in ("candidate", "candidate_dropped"):
                layer.on_speech_candidate(t, active=ev == "candidate")
            else:
                (layer.on_speech_started if ev == "start" else layer.on_speech_ended)(t)
        v = layer.update((i + 1) * 100.0, probs)
        if v is not None:
            return v
    return None


def det(**kw) -> DetectorConfig:
    base = {"name": "d", "label": "human", "classes": ["human"], "threshold": 0.8}
    return DetectorConfig(**(base | kw))


def h(p: float) -> dict[str, float]:
    return {"human": p, "machine": 1 - p}


def test_threshold_fires_at_first_step_at_or_above() -> None:
    v = stream(DecisionLayer([det(threshold=0.8)]), [h(0.5), h(0.79), h(0.8), h(0.9)])
    assert v == Verdict("human", pytest.approx(0.8), 300.0, "d")


def test_mean_window_needs_full_window_and_mean() -> None:
    layer = DecisionLayer([det(threshold=0.8, window_ms=300)])
    v = stream(layer, [h(0.95), h(0.95), h(0.5), h(0.95), h(0.95), h(0.95)])
    # full windows: [.95,.95,.5]=0.8 -> fires at step 3 (t=300), mean == threshold
    assert v is not None and v.t_ms == 300.0
    layer = DecisionLayer([det(threshold=0.85, window_ms=300)])
    v = stream(layer, [h(0.95), h(0.95), h(0.5), h(0.95), h(0.95), h(0.95)])
    # every window holding the 0.5 step means 0.8 < 0.85: the first clean window ends at t=600
    assert v is not None and v.t_ms == 600.0 and v.confidence == pytest.approx(0.95)


def test_min_mode_needs_every_step() -> None:
    layer = DecisionLayer([det(threshold=0.8, window_ms=300, mode="min")])
    v = stream(layer, [h(0.95), h(0.95), h(0.5), h(0.95), h(0.95), h(0.95)])
    assert v is not None and v.t_ms == 600.0 and v.confidence == pytest.approx(0.95)


def test_summed_classes() -> None:
    layer = DecisionLayer([det(label="machine", classes=["machine", "ivr"], threshold=0.8)])
    v = stream(
        layer, [{"human": 0.3, "machine": 0.4, "ivr": 0.3}, {"human": 0.1, "machine": 0.5, "ivr": 0.4}]
    )
    assert v is not None and v.label == "machine" and v.t_ms == 200.0


def test_min_delay_from_call_start_and_from_speech() -> None:
    v = stream(DecisionLayer([det(min_delay_ms=500)]), [h(0.9)] * 10)
    assert v is not None and v.t_ms == 500.0
    # from speech: onset at 320 ms (event arrives before step 4 at t=400), delay 300 -> first t >= 620 is 700
    v = stream(DecisionLayer([det(min_delay_ms=300, from_speech=True)]), [h(0.9)] * 10, {3: ("start", 320.0)})
    assert v is not None and v.t_ms == 700.0
    # no speech ever -> a from_speech detector never fires
    assert stream(DecisionLayer([det(from_speech=True)]), [h(0.99)] * 30) is None


def test_model_evidence_anchors_from_speech_detectors_when_the_vad_heard_nothing() -> None:
    """A caller the VAD misses (quiet line, odd voice) still gets a verdict, counted from the step
    where the model's `none` probability first fell below 0.5."""
    cfg = det(threshold=0.9, min_delay_ms=300, from_speech=True)
    steps = (
        [{"none": 0.9, "human": 0.1}] * 5
        + [{"none": 0.3, "human": 0.7}]
        + [{"none": 0.0, "human": 0.95}] * 10
    )
    v = stream(DecisionLayer([cfg]), steps)
    assert v is not None and v.t_ms == 900.0  # evidence at t=600, +300 ms
    # the VAD's onset wins when it has one, even if the model's evidence came first
    v = stream(DecisionLayer([cfg]), steps, {7: ("start", 750.0)})
    assert v is not None and v.t_ms == 1100.0


def test_max_wait() -> None:
    layer = DecisionLayer([det(max_wait_ms=400)])
    assert stream(layer, [h(0.1)] * 3 + [h(0.9)] * 5) is None  # high only from t=400: too late
    layer = DecisionLayer([det(max_wait_ms=400)])
    v = stream(layer, [h(0.1)] * 2 + [h(0.9)] * 5)
    assert v is not None and v.t_ms == 300.0


def test_requires_silence() -> None:
    cfg = det(from_speech=True, requires_silence_ms=300)
    # speech 100..900 ms, end event arrives before step 10 (t=1000); silence >= 300 from t=1200
    v = stream(DecisionLayer([cfg]), [h(0.9)] * 20, {1: ("start", 100.0), 9: ("end", 900.0)})
    assert v is not None and v.t_ms == 1200.0
    # while speaking, never
    assert stream(DecisionLayer([cfg]), [h(0.9)] * 20, {1: ("start", 100.0)}) is None


def test_requires_silence_holds_while_unconfirmed_voice_is_heard() -> None:
    cfg = det(from_speech=True, requires_silence_ms=400)
    # "hello" 100..400 ms, then voice again at 680 ms: a candidate at step 7 (t=800), which the VAD would
    # confirm only later; without it the verdict comes at t=800 (silence 400 >= 400)
    events = {1: ("start", 100.0), 4: ("end", 400.0)}
    assert stream(DecisionLayer([cfg]), [h(0.9)] * 20, events).t_ms == 800.0
    held = stream(DecisionLayer([cfg]), [h(0.9)] * 20, events | {7: ("candidate", 680.0)})
    assert held is None  # never confirmed nor dropped: the far end is still heard, so never "quiet"
    # the candidate broke off at 712 ms (a click, a breath): the silence since 400 ms still counts
    v = stream(
        DecisionLayer([cfg]),
        [h(0.9)] * 20,
        events | {7: ("candidate", 680.0), 8: ("candidate_dropped", 712.0)},
    )
    assert v is not None and v.t_ms == 900.0
    # confirmed: a second utterance, and the silence counts from its end
    v = stream(
        DecisionLayer([cfg]),
        [h(0.9)] * 20,
        events | {7: ("candidate", 680.0), 8: ("start", 680.0), 12: ("end", 1150.0)},
    )
    assert v is not None and v.t_ms == 1600.0


def test_a_candidate_while_speaking_is_ignored() -> None:
    state = SpeechState()
    state.started(100.0)
    state.candidate(300.0, True)
    assert state.candidate_ms is None
    state.ended(500.0)
    state.candidate(600.0, True)
    assert state.silence_ms(700.0) == 0.0
    state.candidate(632.0, False)
    assert state.silence_ms(700.0) == 200.0


def test_first_wins_and_list_order_breaks_ties() -> None:
    fast = det(name="fast", label="machine", classes=["machine"], threshold=0.6)
    slow = det(name="slow", threshold=0.5, min_delay_ms=800)
    v = stream(DecisionLayer([slow, fast]), [h(0.3)] * 10)
    assert v is not None and v.detector == "fast" and v.label == "machine" and v.t_ms == 100.0
    a = det(name="a", threshold=0.5)
    b = det(name="b", label="machine", classes=["human"], threshold=0.5)
    assert stream(DecisionLayer([b, a]), [h(0.9)]).detector == "b"  # type: ignore[union-attr]
    assert stream(DecisionLayer([a, b]), [h(0.9)]).detector == "a"  # type: ignore[union-attr]


def test_timeout_gives_unknown_and_layer_stays_quiet_after() -> None:
    layer = DecisionLayer([det(threshold=0.99)], timeout_ms=1000)
    v = stream(layer, [h(0.5)] * 20)
    assert v == Verdict("unknown", 0.0, 1000.0, "timeout")
    assert layer.update(2000.0, h(1.0)) is None and layer.verdict == v
    # an empty-class detector is a timer (how presets express their timeout)
    timer = DetectorConfig(name="timeout", label="unknown", classes=[], threshold=0.0, min_delay_ms=600)
    v = stream(DecisionLayer([det(threshold=0.99), timer]), [h(0.5)] * 20)
    assert v is not None and v.label == "unknown" and v.t_ms == 600.0 and v.detector == "timeout"


def test_missing_class_never_fires() -> None:
    assert stream(DecisionLayer([det(classes=["nonexistent"], threshold=0.1)]), [h(0.9)] * 10) is None


def test_speech_state() -> None:
    s = SpeechState()
    assert s.silence_ms(500) == 500
    s.started(600)
    assert s.silence_ms(700) == 0
    s.ended(1000)
    s.started(1500)
    s.ended(1800)
    assert (s.onset_ms, s.first_end_ms, s.last_end_ms, s.silence_ms(2000)) == (600, 1000, 1800, 200)


def test_speech_state_tracks_utterances_talk_and_pauses() -> None:
    s = SpeechState()
    assert (s.utterances, s.talk_ms(300), s.speech_ms(300), s.longest_pause_ms) == (0, 0, 0, 0)
    s.started(600)
    s.started(650)  # a repeated start without an end: the same utterance
    assert (s.utterances, s.talk_ms(1000), s.speech_ms(1000)) == (1, 400, 400)
    s.ended(1400)
    assert (s.talk_ms(1500), s.speech_ms(1500)) == (0, 800)
    s.started(1700)
    s.ended(2000)
    s.started(3000)
    assert (s.utterances, s.longest_pause_ms, s.speech_ms(3200)) == (3, 1000, 1300)


def m(p: float) -> dict[str, float]:
    return {"human": 1 - p, "machine": p}


def machine_det(**kw) -> DetectorConfig:
    return det(label="machine", classes=["machine"], threshold=0.7, from_speech=True, **kw)


def test_min_talk_fires_only_while_the_caller_keeps_talking() -> None:
    # a greeting: one utterance from 100 ms on; p(machine) 0.75 throughout
    v = stream(DecisionLayer([machine_det(min_talk_ms=1000)]), [m(0.75)] * 20, {0: ("start", 100.0)})
    assert v is not None and v.t_ms == 1100.0  # talking 1000 ms at t = 1100
    # a pickup: "Hello?" of 500 ms, then silence: the same probabilities never fire
    v = stream(
        DecisionLayer([machine_det(min_talk_ms=1000)]),
        [m(0.75)] * 20,
        {0: ("start", 100.0), 6: ("end", 600.0)},
    )
    assert v is None


def test_utterance_count_and_pause_conditions() -> None:
    events = {0: ("start", 100.0), 10: ("end", 1000.0), 13: ("start", 1300.0)}  # resumed after 300 ms
    resumed = machine_det(min_utterances=2, max_pause_ms=500, min_speech_ms=1000)
    v = stream(DecisionLayer([resumed]), [m(0.75)] * 20, events)
    assert v is not None and v.t_ms == 1400.0  # 900 ms + 100 ms of speech at t = 1400
    waited = {0: ("start", 100.0), 5: ("end", 500.0), 15: ("start", 1500.0)}  # "Hello?" ... "Hello?"
    assert stream(DecisionLayer([resumed]), [m(0.75)] * 25, waited) is None
    first_only = machine_det(min_talk_ms=100, max_utterances=1)
    assert stream(DecisionLayer([first_only]), [m(0.2)] * 14 + [m(0.9)] * 6, events) is None
    v = stream(DecisionLayer([first_only]), [m(0.2)] * 5 + [m(0.9)] * 6, events)
    assert v is not None and v.t_ms == 600.0


def test_shipped_default_calls_a_long_first_utterance_machine_after_machine_fast_gave_up() -> None:
    """machine_talking (p(machine) >= 0.75 at every step of 500 ms, still in the first utterance)
    decides a greeting that only becomes confident after machine_fast's 900 ms; a pickup that stopped
    talking with the same probabilities is left to the later detectors."""
    dets = load_presets()["default"]
    probs = [m(0.1)] * 3 + [m(0.6)] * 10 + [m(0.78)] * 20  # confident from 1400 ms, speech from 300 ms
    v = stream(DecisionLayer(dets), probs, {3: ("start", 300.0)})
    assert v is not None and (v.label, v.detector, v.t_ms) == ("machine", "machine_talking", 1800.0)
    v = stream(DecisionLayer(dets), probs, {3: ("start", 300.0), 5: ("end", 500.0)})
    assert v is None or v.detector != "machine_talking"


def test_shipped_default_machine_fast_waits_for_200_ms_of_talk() -> None:
    """A clean one-word answer ("ball", 150 ms) with a greeting-like p(machine) is not called machine
    by machine_fast; a caller still talking at 200 ms with the same probabilities is, at once."""
    dets = load_presets()["default"]
    word = [m(0.1)] * 3 + [m(0.85)] * 2 + [m(0.5)] * 40
    v = stream(DecisionLayer(dets), word, {3: ("start", 300.0), 4: ("end", 450.0)})
    assert v is None or v.detector != "machine_fast"
    v = stream(DecisionLayer(dets), [m(0.1)] * 3 + [m(0.85)] * 10, {3: ("start", 300.0)})
    assert v is not None and (v.label, v.detector, v.t_ms) == ("machine", "machine_fast", 500.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DetectorConfig(name="x", label="human", classes=["human"], window_ms=150)
    with pytest.raises(ValueError):
        DetectorConfig(name="x", label="robot", classes=["human"])
    assert DetectorConfig(name="x", label="human", classes="human").classes == ["human"]


def test_shipped_presets_load() -> None:
    presets = load_presets()
    assert {"parallel_dial", "power_dial", "voicemail_drop", "default"} <= set(presets)
    for name, dets in presets.items():
        labels = {d.label for d in dets}
        assert {"human", "machine", "unknown"} <= labels, name
        assert any(d.label == "unknown" and not d.classes for d in dets), f"{name} has no timeout"


async def test_processor_pushes_one_verdict_and_forwards_everything() -> None:
    proc = AmdDecisionProcessor([det(from_speech=True, min_delay_ms=200)])
    seen: list[Verdict] = []

    @proc.event_handler("on_verdict")
    async def _on(p: AmdDecisionProcessor, v: Verdict) -> None:
        seen.append(v)

    frames: list[Frame] = [AmdProbabilityFrame(t_ms=100.0, probs=h(0.9)), SpeechStartedFrame(t_ms=120.0)]
    frames += [AmdProbabilityFrame(t_ms=100.0 * i, probs=h(0.9)) for i in range(2, 8)]
    frames += [SpeechEndedFrame(t_ms=800.0)]
    down, _ = await run_test(proc, frames_to_send=frames)
    verdicts = [f for f in down if isinstance(f, AmdVerdictFrame)]
    assert len(verdicts) == 1
    v = verdicts[0]
    assert (v.label, v.t_ms, v.detector) == ("human", 400.0, "d")  # onset 120 + 200 -> first step >= 320
    assert v.to_event()["event"] == "amd"
    assert sum(isinstance(f, AmdProbabilityFrame) for f in down) == 7
    assert any(isinstance(f, SpeechEndedFrame) for f in down)
    # the verdict comes right after the probability frame that decided it
    idx = down.index(v)
    assert isinstance(down[idx - 1], AmdProbabilityFrame) and down[idx - 1].t_ms == 400.0
    assert [s.label for s in seen] == ["human"]


def test_processor_loads_workflow_preset() -> None:
    proc = AmdDecisionProcessor(workflow="power_dial")
    assert any(d.cfg.name == "human" for d in proc.layer.detectors)
    with pytest.raises(ValueError):
        AmdDecisionProcessor(workflow="nope")
