"""A minimal agent call for the services tests: caller audio -> STT -> turns -> LLM -> TTS -> recorder.

The agent workflow (pipelines/agent.py) is built elsewhere; these tests need only the services and a
turn-taker, so a 6-line TurnDriver stands in for the user aggregator (every final transcript is a user
turn). The caller is flite's kal voice (which pocketsphinx recognizes well, so a call that falls back
to the offline STT still understands "goodbye"). VAD frames are given with the audio, as the user
aggregator would broadcast them. The call ends when the LLM calls `end_call`, which the test registers
like the agent workflow will.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from callgate import synth
from callgate.audio import to_int16
from pipelines.services import AgentServices
from pipelines.services.resilience import VendorFaultFrame

CALLER_LINES = ["yes I can talk now", "tomorrow morning please", "no thank you goodbye"]
_SPEECH: dict[str, bytes] = {}


def caller_pcm(text: str) -> bytes:
    if text not in _SPEECH:
        x = synth.concat(synth.silence(0.2), synth.speech(text, engine="flite", voice="kal"), synth.silence(0.1))
        _SPEECH[text] = to_int16(x).tobytes()
    return _SPEECH[text]


TOOLS = ToolsSchema(
    standard_tools=[
        FunctionSchema(name="end_call", description="End the call", properties={"reason": {"type": "string"}}, required=[]),
        FunctionSchema(name="transfer_to_human", description="Transfer", properties={}, required=[]),
    ]
)


class TurnDriver(FrameProcessor):
    """Every final transcript becomes a user message and an LLM run (what the user aggregator does)."""

    def __init__(self) -> None:
        super().__init__()
        self.context = LLMContext(tools=TOOLS)
        self.transcripts: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self.transcripts.append(frame.text)
            self.context.add_message({"role": "user", "content": frame.text})
            await self.push_frame(LLMContextFrame(self.context))
            return
        await self.push_frame(frame, direction)


class Recorder(FrameProcessor):
    """Keeps what reached the end of the pipeline: bot audio, bot words, errors that escaped."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_bytes = 0
        self.words: list[str] = []
        self.replies_done = 0
        self.first_audio_at: float | None = None
        self.vendor_events: list[dict[str, Any]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio_bytes += len(frame.audio)
            self.first_audio_at = self.first_audio_at or time.monotonic()
        elif isinstance(frame, TTSTextFrame):
            self.words.append(frame.text)
        elif isinstance(frame, TTSStoppedFrame):
            self.replies_done += 1
        elif isinstance(frame, VendorFaultFrame):
            self.vendor_events.append(frame.to_event())
        await self.push_frame(frame, direction)


@dataclass
class CallResult:
    transcripts: list[str]
    bot_words: list[str]
    bot_audio_secs: float
    ended_by: list[dict[str, Any]]
    cancelled: bool
    escaped_errors: list[str]
    counters: dict[str, int]
    active: dict[str, str]
    secs: float = 0.0
    turn_replies: list[int] = field(default_factory=list)
    vendor_events: list[dict[str, Any]] = field(default_factory=list)


class _Watch(FrameProcessor):
    """First in the pipeline: sees errors that could end the call, and a cancel if one happens.

    A switcher forwards a vendor error it did not switch on (Pipecat's design: a dropped socket that
    reconnects is reported, not hidden); those are counted in VendorHealth and are not call-ending, so
    only fatal errors or errors of a processor that can no longer work are kept here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.cancelled = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame) and (frame.fatal or not getattr(frame.processor, "is_usable", True)):
            self.errors.append(frame.error)  # an error that could end the call, not one already coped with
        if isinstance(frame, CancelFrame):
            self.cancelled = True
        await self.push_frame(frame, direction)


async def run_call(
    services: AgentServices, lines: list[str] = CALLER_LINES, *, reply_wait_secs: float = 10.0
) -> CallResult:
    """Play `lines` as the caller (each after the bot's previous reply), until the LLM calls end_call."""
    watch, driver, rec = _Watch(), TurnDriver(), Recorder()
    ended: list[dict[str, Any]] = []
    ended_evt = asyncio.Event()

    async def end_call(params):
        ended.append(dict(params.arguments))
        ended_evt.set()
        await params.result_callback({"ok": True}, properties=None)

    async def transfer(params):
        await params.result_callback({"ok": True}, properties=None)

    services.llm.register_function("end_call", end_call)  # type: ignore[attr-defined]
    services.llm.register_function("transfer_to_human", transfer)  # type: ignore[attr-defined]
    pipeline = Pipeline([watch, services.stt, driver, services.llm, services.tts, rec])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        enable_rtvi=False,
        cancel_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    t0 = time.monotonic()
    run = asyncio.create_task(runner.run())
    turn_replies: list[int] = []

    async def say(text: str) -> None:
        pcm = caller_pcm(text)
        await worker.queue_frame(VADUserStartedSpeakingFrame())
        for i in range(0, len(pcm), 320):
            await worker.queue_frame(InputAudioRawFrame(pcm[i : i + 320], 8000, 1))
            await asyncio.sleep(0.005)  # 4x real time
        await worker.queue_frame(VADUserStoppedSpeakingFrame())
        for _ in range(40):  # 0.8 s of quiet after the line
            await worker.queue_frame(InputAudioRawFrame(bytes(320), 8000, 1))
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(started.wait(), timeout=15)
        for line in lines:
            before = rec.replies_done
            await say(line)
            deadline = time.monotonic() + reply_wait_secs
            while rec.replies_done == before and time.monotonic() < deadline and not ended_evt.is_set():
                await asyncio.sleep(0.05)
            turn_replies.append(rec.replies_done - before)
            if ended_evt.is_set():
                break
        try:
            await asyncio.wait_for(ended_evt.wait(), timeout=5)
        except TimeoutError:
            pass
        await asyncio.sleep(0.3)  # the goodbye's audio
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, timeout=20)
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.wait_for(run, timeout=10)
    return CallResult(
        transcripts=driver.transcripts,
        bot_words=rec.words,
        bot_audio_secs=rec.audio_bytes / 2 / 8000,
        ended_by=ended,
        cancelled=watch.cancelled,
        escaped_errors=watch.errors,
        counters=dict(services.health.counters),
        active=dict(services.health.active),
        secs=time.monotonic() - t0,
        turn_replies=turn_replies,
        vendor_events=rec.vendor_events,
    )
