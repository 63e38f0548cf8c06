"""Far-end speech activity in audio time, from Pipecat's bundled Silero VAD (ONNX, 8 kHz).

Pipecat's VAD state machine updates once per buffer and stamps frames with wall-clock time; workflows,
AMD latency and replay need audio time accurate to one 32 ms window whatever the frame size. So the
analyzer here scores every Silero window itself (same model, same ONNX file) and runs its own
start/stop hangover, and the processor only moves it off the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.frames import SpeechEndedFrame, SpeechStartedFrame

SAMPLES_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True)
class SpeechEvent:
    kind: Literal["start", "end"]
    t_ms: float  # start: first voiced window; end: end of the last voiced window


class SpeechAnalyzer:
    """Silero confidence per window -> speech start/end events (numpy/bytes in, events out, no asyncio).

    A start needs `start_ms` of consecutive voiced windows; an end needs `stop_ms` of unvoiced ones.
    Windows quieter than `min_dbfs` never count as voiced (line noise, far-away TV at low level).
    """

    def __init__(
        self, *, threshold: float = 0.6, start_ms: float = 96, stop_ms: float = 200, min_dbfs: float = -50.0
    ) -> None:
        self._vad = SileroVADAnalyzer(sample_rate=SAMPLE_RATE)
        self._vad.set_sample_rate(SAMPLE_RATE)
        self._window = self._vad.num_frames_required()
        self.threshold, self.start_ms, self.stop_ms = threshold, start_ms, stop_ms
        self._min_rms = 32768.0 * 10 ** (min_dbfs / 20)
        self._buf = np.zeros(0, dtype=np.int16)
        self._consumed = 0  # samples already scored
        self.speaking = False
        self._candidate_ms: float | None = None
        self._last_voiced_end_ms = 0.0

    @property
    def window_ms(self) -> float:
        return self._window / SAMPLES_PER_MS

    def process(self, pcm: bytes | np.ndarray) -> list[SpeechEvent]:
        x = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray) else pcm
        self._buf = np.concatenate([self._buf, x.astype(np.int16, copy=False)])
        events: list[SpeechEvent] = []
        n = len(self._buf) // self._window
        for i in range(n):
            win = self._buf[i * self._window : (i + 1) * self._window]
            t0 = self._consumed / SAMPLES_PER_MS
            self._consumed += self._window
            t1 = self._consumed / SAMPLES_PER_MS
            loud = float(np.sqrt(np.mean(win.astype(np.float32) ** 2))) >= self._min_rms
            voiced = loud and self._vad.voice_confidence(win.tobytes()) >= self.threshold
            if not self.speaking:
                if not voiced:
                    self._candidate_ms = None
                    continue
                if self._candidate_ms is None:
                    self._candidate_ms = t0
                if t1 - self._candidate_ms >= self.start_ms:
                    self.speaking, self._last_voiced_end_ms = True, t1
                    events.append(SpeechEvent("start", self._candidate_ms))
                    self._candidate_ms = None
            elif voiced:
                self._last_voiced_end_ms = t1
            elif t1 - self._last_voiced_end_ms >= self.stop_ms:
                self.speaking = False
                events.append(SpeechEvent("end", self._last_voiced_end_ms))
        self._buf = self._buf[n * self._window :]
        return events


class SpeechDetector(FrameProcessor):
    """Pushes SpeechStartedFrame / SpeechEndedFrame downstream; Silero runs on a worker thread."""

    def __init__(self, analyzer: SpeechAnalyzer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.analyzer = analyzer or SpeechAnalyzer()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            loop = asyncio.get_running_loop()
            for event in await loop.run_in_executor(self._executor, self.analyzer.process, frame.audio):
                cls = SpeechStartedFrame if event.kind == "start" else SpeechEndedFrame
                await self.push_frame(cls(t_ms=event.t_ms))

    async def cleanup(self) -> None:
        await super().cleanup()
        self._executor.shutdown(wait=False)
