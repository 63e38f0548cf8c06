"""AmdProcessor with a fake model: one probability frame per 100 ms of audio with the right audio
time, the model runs off the event loop, and a recorded trace replays to the live verdict."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from amd_model.traces import SpeechEvent, Trace, load_traces, replay_trace
from processors.amd import STEP_SAMPLES, AmdProcessor
from processors.amd_decision import AmdDecisionProcessor, load_presets
from processors.frames import (
    AmdProbabilityFrame,
    AmdVerdictFrame,
    SpeechCandidateFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    StopDetectorsFrame,
)

CLASSES = ("none", "human", "machine", "ivr", "carrier_intercept")  # the real model's


class FakeModel:
    """The AmdModel interface, with state: once it heard a loud step it calls the call human."""

    classes = CLASSES

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.threads: set[int] = set()
        self.calls = 0

    def new_state(self) -> dict[str, int]:
        return {"steps": 0, "heard": 0}

    def step(self, pcm: np.ndarray, state: dict[str, int]) -> np.ndarray:
        assert pcm.shape == (STEP_SAMPLES,) and pcm.dtype == np.int16
        self.threads.add(threading.get_ident())
        self.calls += 1
        state["steps"] += 1
        if self.delay_s:
            time.sleep(self.delay_s)  # blocking, like ONNX inference
        state["heard"] |= int(float(np.abs(pcm.astype(np.float32)).mean()) > 500)
        p = [0.005, 0.96, 0.02, 0.01, 0.005] if state["heard"] else [0.7, 0.1, 0.1, 0.05, 0.05]
        return np.array(p, dtype=np.float32)


def audio_frames(ms_pattern: list[tuple[int, int]]) -> list[InputAudioRawFrame]:
    """[(duration_ms, amplitude)] -> 20 ms InputAudioRawFrames at 8 kHz."""
    pcm = np.concatenate(
        [
            np.full(d * 8, a, dtype=np.int16) * np.where(np.arange(d * 8) % 2, 1, -1).astype(np.int16)
            for d, a in ms_pattern
        ]
    )
    return [
        InputAudioRawFrame(audio=pcm[i : i + 160].tobytes(), sample_rate=8000, num_channels=1)
        for i in range(0, pcm.size, 160)
    ]


async def test_probability_frame_every_100ms_with_audio_time() -> None:
    model = FakeModel()
    frames = audio_frames([(1050, 0)])  # 52.5 frames -> 52 full 20 ms frames + 1 partial = 1050 ms
    down, _ = await run_test(AmdProcessor(model=model), frames_to_send=frames)
    probs = [f for f in down if isinstance(f, AmdProbabilityFrame)]
    assert [p.t_ms for p in probs] == [100.0 * i for i in range(1, 11)]  # the trailing 50 ms wait
    assert set(probs[0].probs) == set(CLASSES) and abs(sum(probs[0].probs.values()) - 1) < 1e-5
    assert sum(isinstance(f, InputAudioRawFrame) for f in down) == len(frames)  # audio forwarded
    # each probability frame follows the audio that completed its step
    first = down.index(probs[0])
    assert sum(isinstance(f, InputAudioRawFrame) for f in down[:first]) == 5


async def test_model_runs_off_the_event_loop() -> None:
    model = FakeModel(delay_s=0.04)
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    try:
        down, _ = await run_test(AmdProcessor(model=model), frames_to_send=audio_frames([(1000, 3000)]))
    finally:
        task.cancel()
    elapsed = time.perf_counter() - t0
    assert model.calls == 10
    assert loop_thread not in model.threads and len(model.threads) == 1  # one executor thread per processor
    # 10 x 40 ms of blocking inference; on the loop, the 5 ms ticker would have starved (~80 ticks free)
    assert elapsed >= 0.4 and ticks >= 20
    assert sum(isinstance(f, AmdProbabilityFrame) for f in down) == 10


def _hello_call(extra: dict[int, Frame] | None = None) -> list[Frame]:
    """300 ms quiet, "Hello?" 500 ms, then quiet; the VAD frames (and `extra`, by the audio time in ms
    of the 20 ms frame they follow) arrive where the live detector sends them."""
    events = {420: SpeechStartedFrame(t_ms=290.0), 1000: SpeechEndedFrame(t_ms=800.0)} | (extra or {})
    frames: list[Frame] = []
    for i, f in enumerate(audio_frames([(300, 0), (500, 4000), (2700, 0)])):
        frames.append(f)
        if (i + 1) * 20 in events:
            frames.append(events[(i + 1) * 20])
    return frames


async def test_trace_recorded_and_replays_to_the_live_verdict(tmp_path) -> None:
    detectors = load_presets()["parallel_dial"]
    amd = AmdProcessor(
        model=FakeModel(), trace_path=tmp_path, call_id="CAtest", workflow="parallel_dial", label="human"
    )
    decide = AmdDecisionProcessor(detectors, workflow="parallel_dial", recorder=amd.recorder)
    down, _ = await run_test(Pipeline([amd, decide]), frames_to_send=_hello_call())
    verdicts = [f for f in down if isinstance(f, AmdVerdictFrame)]
    assert len(verdicts) == 1 and verdicts[0].label == "human"
    [trace] = load_traces(tmp_path)
    assert trace.call_id == "CAtest" and trace.label == "human" and len(trace.steps) == 35
    assert [(e.event, e.at_step) for e in trace.speech] == [("start", 4), ("end", 10)]
    assert trace.verdicts[0]["label"] == "human" and trace.verdicts[0]["t_ms"] == verdicts[0].t_ms
    replayed = replay_trace(trace, detectors)
    assert (replayed.label, replayed.t_ms, replayed.detector) == (
        "human",
        verdicts[0].t_ms,
        verdicts[0].detector,
    )
    assert replayed.confidence == verdicts[0].confidence


async def test_unconfirmed_voice_holds_the_human_verdict_live_and_in_the_replayed_trace(tmp_path) -> None:
    detectors = load_presets()["default"]  # human: p >= 0.95 over 200 ms, 400 ms of silence

    async def run(candidate: bool) -> tuple[AmdVerdictFrame, object]:
        amd = AmdProcessor(
            model=FakeModel(), trace_path=tmp_path / str(candidate), call_id="CAc", label="human"
        )
        decide = AmdDecisionProcessor(detectors, recorder=amd.recorder)
        extra: dict[int, Frame] = {}
        if candidate:  # voice again at 1120 ms, reported before the 1200 ms step; it broke off at 1250
            extra = {
                1140: SpeechCandidateFrame(t_ms=1120.0),
                1300: SpeechCandidateFrame(t_ms=1250.0, active=False),
            }
        down, _ = await run_test(Pipeline([amd, decide]), frames_to_send=_hello_call(extra))
        [verdict] = [f for f in down if isinstance(f, AmdVerdictFrame)]
        [trace] = load_traces(tmp_path / str(candidate))
        return verdict, trace

    plain, _ = await run(False)
    held, trace = await run(True)
    assert (plain.label, plain.t_ms) == ("human", 1200.0)  # 400 ms after the end at 800
    assert (held.label, held.t_ms) == ("human", 1400.0)  # the steps at 1200 and 1300 heard voice
    assert [(e.event, e.at_step) for e in trace.speech] == [
        ("start", 4),
        ("end", 10),
        ("candidate", 11),
        ("candidate_dropped", 13),
    ]
    replayed = replay_trace(trace, detectors)
    assert (replayed.label, replayed.t_ms, replayed.detector) == ("human", 1400.0, held.detector)


def test_version_1_traces_still_replay_and_newer_ones_are_refused() -> None:
    old = {
        "version": 1,
        "call_id": "x",
        "classes": list(CLASSES),
        "step_ms": 100,
        "steps": [[100.0 * i, 0.0, 0.97, 0.01, 0.01, 0.01] for i in range(1, 20)],
        "speech": [
            {"event": "start", "t_ms": 100, "at_step": 1},
            {"event": "end", "t_ms": 500, "at_step": 6},
        ],
    }
    assert replay_trace(Trace.from_dict(old), load_presets()["default"]).label == "human"
    assert Trace.from_dict(old).to_dict()["version"] == 2
    with pytest.raises(ValueError, match="newer than this callgate"):
        Trace.from_dict(old | {"version": 3})


def test_a_trace_with_an_unknown_speech_event_is_an_error_not_an_end() -> None:
    trace = Trace(
        call_id="x",
        classes=list(CLASSES),
        steps=[[100.0, 0.0, 1.0, 0.0, 0.0, 0.0]],
        speech=[SpeechEvent("stat", 50.0, 0)],
    )
    with pytest.raises(ValueError, match="unknown speech event 'stat'"):
        replay_trace(trace, load_presets()["default"])


def _hello_frames() -> list[Frame]:
    """300 ms quiet, "Hello?" 500 ms, then quiet, with the VAD's frames where the live detector sends them,
    paced (a pause every 100 ms, as a live call's audio trickles in; a stop pushed upstream overtakes
    the audio still to come, not what is already queued)."""
    frames: list[Frame] = []
    for i, f in enumerate(audio_frames([(300, 0), (500, 4000), (2700, 0)])):
        frames.append(f)
        if (i + 1) % 5 == 0:
            frames.append(SleepFrame(0.02))
        if (i + 1) * 20 == 420:
            frames.append(SpeechStartedFrame(t_ms=290.0))
        if (i + 1) * 20 == 1000:
            frames.append(SpeechEndedFrame(t_ms=800.0))
    return frames


class _StopAfterFirstAudio(FrameProcessor):
    """A workflow that needs no detection from its first audio frame on (pushes StopDetectorsFrame up)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and not self.sent:
            self.sent = True
            await self.push_frame(StopDetectorsFrame(), FrameDirection.UPSTREAM)


async def test_amd_steps_end_at_the_verdict() -> None:
    """No trace: once the decision has its verdict, the model runs no more steps (nobody reads them)."""
    model = FakeModel()
    amd = AmdProcessor(model=model)
    decide = AmdDecisionProcessor(load_presets()["parallel_dial"], workflow="parallel_dial")
    down, up = await run_test(Pipeline([amd, decide]), frames_to_send=_hello_frames())
    [verdict] = [f for f in down if isinstance(f, AmdVerdictFrame)]
    steps = [f.t_ms for f in down if isinstance(f, AmdProbabilityFrame)]
    assert verdict.label == "human" and steps[-1] <= verdict.t_ms + 100 and len(steps) < 35  # one in flight
    assert model.calls == len(steps)
    assert not any(isinstance(f, StopDetectorsFrame) for f in up)  # AMD's own stop ends at AmdProcessor


async def test_a_workflows_stop_waits_for_the_verdict() -> None:
    """The workflow stops the detectors before AMD has decided: AMD and the speech events still reach the
    decision until its verdict, then the stop goes on upstream (to the VAD and the beep detector)."""
    model = FakeModel()
    amd = AmdProcessor(model=model)
    decide = AmdDecisionProcessor(load_presets()["parallel_dial"], workflow="parallel_dial")
    down, up = await run_test(Pipeline([amd, decide, _StopAfterFirstAudio()]), frames_to_send=_hello_frames())
    [verdict] = [f for f in down if isinstance(f, AmdVerdictFrame)]
    steps = [f.t_ms for f in down if isinstance(f, AmdProbabilityFrame)]
    assert verdict.label == "human" and steps[-1] <= verdict.t_ms + 100
    assert [type(f) for f in up if isinstance(f, StopDetectorsFrame)] == [StopDetectorsFrame]
    assert not next(f for f in up if isinstance(f, StopDetectorsFrame)).amd_only


async def test_a_workflows_stop_is_held_while_amd_has_not_decided() -> None:
    decide = AmdDecisionProcessor(load_presets()["parallel_dial"], workflow="parallel_dial")
    down, up = await run_test(
        Pipeline([AmdProcessor(model=FakeModel()), decide, _StopAfterFirstAudio()]),
        frames_to_send=audio_frames([(400, 0)]),  # too short for any verdict
    )
    assert decide.verdict is None and not any(isinstance(f, StopDetectorsFrame) for f in up)
    assert sum(isinstance(f, AmdProbabilityFrame) for f in down) == 4  # AMD kept stepping
