"""Streams the AMD model over the call's audio: one AmdProbabilityFrame per 100 ms of audio.

The model (ONNX) runs on the shared inference thread, one run per tick for every live call's step
(processors/batching.py), so the event loop never runs inference and no call needs its own thread. The ONNX session is loaded once per process and shared;
each call owns its recurrent state. Optionally records the call's trace (steps, speech events,
verdict) for `callgate tune`.

Pipeline order: ... -> SpeechDetector -> AmdProcessor -> AmdDecisionProcessor -> workflow.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from amd_model.traces import TraceRecorder
from callgate.audio import SAMPLE_RATE
from processors.amd_decision import STEP_MS
from processors.batching import TickBatcher, check_pcm
from processors.frames import (
    AmdProbabilityFrame,
    SpeechCandidateFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    StopDetectorsFrame,
    TwilioStartFrame,
)

STEP_SAMPLES = SAMPLE_RATE * STEP_MS // 1000  # 800


class StepModel(Protocol):
    """What AmdProcessor needs from a model (amd_model.runtime.AmdModel, or a fake in tests)."""

    classes: tuple[str, ...]

    def new_state(self) -> Any: ...

    def step(self, pcm: np.ndarray, state: Any) -> np.ndarray: ...


def _step_batch(items: list[tuple[StepModel, np.ndarray, Any]]) -> list[np.ndarray]:
    """Every live call's next step, one model run per model (`step_batch` when it has one)."""
    out: list[np.ndarray | None] = [None] * len(items)
    by_model: dict[int, list[int]] = {}
    for i, (model, _pcm, _state) in enumerate(items):
        by_model.setdefault(id(model), []).append(i)
    for idx in by_model.values():
        model = items[idx[0]][0]
        if hasattr(model, "step_batch"):
            probs = model.step_batch([items[i][1] for i in idx], [items[i][2] for i in idx])
        else:
            probs = [model.step(items[i][1], items[i][2]) for i in idx]
        for i, p in zip(idx, probs, strict=True):
            out[i] = p
    return out  # type: ignore[return-value]


_AMD_BATCHER: TickBatcher[tuple[StepModel, np.ndarray, Any], np.ndarray] = TickBatcher(
    _step_batch, "amd", check=lambda item: check_pcm(item[1], samples=STEP_SAMPLES)
)


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def get_shared_model(path: str | Path | None = None) -> Any:
    """The process-wide AmdModel for `path` (default model), loaded on first use."""
    key = str(Path(path).resolve()) if path is not None else ""
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            from amd_model.runtime import AmdModel  # serving path: onnxruntime + numpy only

            model = AmdModel(Path(path) if path is not None else None)
            _MODELS[key] = model
        return model


class AmdProcessor(FrameProcessor):
    """Buffers 8 kHz PCM into 100 ms steps and pushes the model's class probabilities downstream.

    `t_ms` of each AmdProbabilityFrame is the end of its step in audio time (samples / 8). Forwards
    every frame (audio first, so nothing downstream waits on the model). A trailing partial step at
    the end of the call is dropped, as `AmdModel.run` does. A StopDetectorsFrame from upstream (the
    decision has its verdict) ends the steps, unless a trace is being recorded.

    Trace recording: pass `trace_path` (a directory, or a .json file) and the trace is written on
    EndFrame/CancelFrame; give `recorder` to AmdDecisionProcessor so the verdict lands in it too.
    """

    def __init__(
        self,
        *,
        model: StepModel | None = None,
        model_path: str | Path | None = None,
        trace_path: str | Path | None = None,
        call_id: str | None = None,
        workflow: str | None = None,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._model: StepModel = model if model is not None else get_shared_model(model_path)
        self._state = self._model.new_state()
        self._classes = tuple(self._model.classes)
        self._buf = np.zeros(0, dtype=np.int16)
        self._steps = 0
        self._warned_rate = False
        self._stopped = False  # a StopDetectorsFrame came: no more steps (unless a trace is recorded)
        self._trace_task: asyncio.Future[None] | None = None
        self._call_id_given = call_id is not None
        self.recorder: TraceRecorder | None = None
        if trace_path is not None:
            self.recorder = TraceRecorder(
                trace_path, call_id=call_id, workflow=workflow, label=label, classes=self._classes
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def steps(self) -> int:
        """Steps pushed so far (audio time of the last step = steps * 100 ms)."""
        return self._steps

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StopDetectorsFrame):
            # A trace keeps every step: `callgate tune` replays them past the verdict it recorded.
            self._stopped = self._stopped or self.recorder is None
            if not frame.amd_only:
                await self.push_frame(frame, direction)
            return
        await self.push_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, InputAudioRawFrame):
            if not self._stopped:
                await self._on_audio(frame)
        elif self.recorder is not None:
            if isinstance(frame, SpeechStartedFrame):
                self.recorder.add_speech("start", frame.t_ms)
            elif isinstance(frame, SpeechEndedFrame):
                self.recorder.add_speech("end", frame.t_ms)
            elif isinstance(frame, SpeechCandidateFrame):
                self.recorder.add_speech("candidate" if frame.active else "candidate_dropped", frame.t_ms)
            elif isinstance(frame, TwilioStartFrame) and frame.call_sid and not self._call_id_given:
                self.recorder.call_id = frame.call_sid
            elif isinstance(frame, EndFrame | CancelFrame):
                await self._save_trace()

    async def _on_audio(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != SAMPLE_RATE or frame.num_channels != 1:
            if not self._warned_rate:
                logger.error(
                    f"{self}: AMD needs 8 kHz mono audio, got {frame.sample_rate} Hz x{frame.num_channels}"
                    " (set PipelineParams(audio_in_sample_rate=8000)); skipping"
                )
                self._warned_rate = True
            return
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        self._buf = np.concatenate([self._buf, pcm]) if self._buf.size else pcm.copy()
        while self._buf.size >= STEP_SAMPLES:
            chunk, self._buf = self._buf[:STEP_SAMPLES], self._buf[STEP_SAMPLES:]
            probs = await _AMD_BATCHER.submit((self._model, chunk, self._state))
            self._steps += 1
            t_ms = float(self._steps * STEP_MS)
            values = [float(p) for p in np.asarray(probs).reshape(-1)]
            if self.recorder is not None:
                self.recorder.add_step(t_ms, values)
            await self.push_frame(
                AmdProbabilityFrame(t_ms=t_ms, probs=dict(zip(self._classes, values, strict=True)))
            )

    async def _save_trace(self) -> None:
        """EndFrame and cleanup() both ask: one write, which each of them waits for (shielded, so a
        pipeline cancelled meanwhile still finds the trace written once cleanup() returns)."""
        if self.recorder is None:
            return
        if self._trace_task is None:
            if self.recorder.saved_to is not None:
                return
            self._trace_task = asyncio.ensure_future(self._write_trace(self.recorder))
        await asyncio.shield(self._trace_task)

    async def _write_trace(self, recorder: TraceRecorder) -> None:
        try:  # a long call's trace is a few hundred KB of JSON: written off the event loop
            path = await asyncio.to_thread(recorder.save)
            logger.info(f"{self}: AMD trace saved to {path}")
        except OSError as e:  # a full disk must not take the call down
            logger.error(f"{self}: could not save AMD trace: {e}")

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._save_trace()
