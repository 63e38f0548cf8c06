"""Far-end speech activity in audio time, from Pipecat's bundled Silero VAD (ONNX, 8 kHz).

Pipecat's VAD state machine updates once per buffer and stamps frames with wall-clock time; workflows,
AMD latency and replay need audio time accurate to one 32 ms window whatever the frame size. So the
analyzer here scores every Silero window itself (same model, same ONNX file, loaded once per process)
and runs its own start/stop hangover, and the processor hands the scoring to the shared inference
thread, batched with every other live call's.
"""

from __future__ import annotations

import importlib.resources
import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.batching import TickBatcher, check_pcm
from processors.frames import SpeechCandidateFrame, SpeechEndedFrame, SpeechStartedFrame, StopDetectorsFrame

SAMPLES_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True)
class SpeechEvent:
    """A VAD transition. `candidate` / `candidate_dropped` (only with `report_candidates`): a voiced
    run began while the caller was quiet / it broke off before it was long enough to be a start."""

    kind: Literal["start", "end", "candidate", "candidate_dropped"]
    t_ms: float  # start, candidate: first voiced window; end, candidate_dropped: end of the last voiced one


class SileroModel:
    """Pipecat's bundled Silero VAD (the same ONNX file), loaded once per process for every call.

    Pipecat's `SileroOnnxModel` keeps one call's recurrent state inside the model object, so each call
    loaded its own copy. Here the per-call state lives in a `SileroStream`, and `score()` runs the
    windows of many streams in one ONNX run along the batch axis. Per stream it does exactly what
    Pipecat's `SileroVADAnalyzer.voice_confidence` does: 32 samples of context before each 256-sample
    window, and a state reset after 2 s of scored windows once 5 in a row were below 0.1.
    """

    WINDOW = 256  # 32 ms at 8 kHz
    CONTEXT = 32
    RESET_WINDOWS = int(2.0 * SAMPLE_RATE / WINDOW + 0.999)  # ceil: Pipecat resets once windows*256 >= 2 s
    RESET_MAX_CONFIDENCE = 0.1
    RESET_LOW_WINDOWS = 5

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime as ort

        if path is None:
            path = str(importlib.resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def new_stream(self) -> SileroStream:
        return SileroStream()

    def score(self, streams: list[SileroStream], windows: np.ndarray) -> np.ndarray:
        """One window per stream: int16 (B, 256) -> speech confidence (B,); updates each stream."""
        b = len(streams)
        x = np.empty((b, self.CONTEXT + self.WINDOW), dtype=np.float32)
        for i, st in enumerate(streams):
            x[i, : self.CONTEXT] = st.context
        x[:, self.CONTEXT :] = windows.astype(np.float32) / 32768.0
        state = np.concatenate([st.state for st in streams], axis=1) if b > 1 else streams[0].state
        out, state_n = self.session.run(None, {"input": x, "state": state, "sr": self._sr})
        conf = out[:, 0]
        for i, st in enumerate(streams):
            st.state = state_n[:, i : i + 1, :]
            st.context = x[i, -self.CONTEXT :].copy()
            st.after_window(float(conf[i]))
        return conf


@dataclass
class SileroStream:
    """One call's Silero state: recurrent state, audio context, and Pipecat's reset counters."""

    state: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(SileroModel.CONTEXT, dtype=np.float32))
    windows_since_reset: int = 0
    low_windows: int = 0

    def after_window(self, confidence: float) -> None:
        """Pipecat's `_maybe_reset_model` (its VAD state is always QUIET here: only scores are used)."""
        self.windows_since_reset += 1
        self.low_windows = self.low_windows + 1 if confidence < SileroModel.RESET_MAX_CONFIDENCE else 0
        if self.windows_since_reset >= SileroModel.RESET_WINDOWS and self.low_windows >= SileroModel.RESET_LOW_WINDOWS:
            self.state = np.zeros((2, 1, 128), dtype=np.float32)
            self.context = np.zeros(SileroModel.CONTEXT, dtype=np.float32)
            self.windows_since_reset = 0


_SILERO: SileroModel | None = None
_SILERO_LOCK = threading.Lock()


def shared_silero() -> SileroModel:
    """The process-wide Silero model, loaded on first use."""
    global _SILERO
    with _SILERO_LOCK:
        if _SILERO is None:
            _SILERO = SileroModel()
        return _SILERO


@dataclass
class _Window:
    t0: float
    t1: float
    pcm: np.ndarray | None  # None: too quiet to be speech, the model is not asked


class SpeechAnalyzer:
    """Silero confidence per window -> speech start/end events (numpy/bytes in, events out, no asyncio).

    A start needs `start_ms` of consecutive voiced windows; an end needs `stop_ms` of unvoiced ones.
    Windows quieter than `min_dbfs` never count as voiced (line noise, far-away TV at low level).
    With `report_candidates`, a voiced run is also reported as it begins, before the start hangover
    confirms it: AMD must not call a caller "quiet, waiting" while they have audibly resumed talking.
    `process()` scores one call's audio; `process_batch()` scores many calls' audio with one model
    run per window position (what SpeechDetector does for all live calls at once).
    """

    def __init__(
        self,
        *,
        threshold: float = 0.6,
        start_ms: float = 96,
        stop_ms: float = 200,
        min_dbfs: float = -50.0,
        model: SileroModel | None = None,
        report_candidates: bool = False,
    ) -> None:
        self.model = model or shared_silero()
        self.report_candidates = report_candidates
        self._stream = self.model.new_stream()
        self._window = SileroModel.WINDOW
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
        return process_batch([self], [pcm])[0]

    def _take_windows(self, pcm: bytes | np.ndarray) -> list[_Window]:
        """Cut the complete windows out of the buffered audio; loud ones keep their samples."""
        x = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray) else pcm
        self._buf = np.concatenate([self._buf, x.astype(np.int16, copy=False)])
        n = len(self._buf) // self._window
        out: list[_Window] = []
        if n:
            wins = self._buf[: n * self._window].reshape(n, self._window)
            rms = np.sqrt(np.mean(wins.astype(np.float32) ** 2, axis=1))
            for i in range(n):
                t0 = self._consumed / SAMPLES_PER_MS
                self._consumed += self._window
                out.append(_Window(t0, self._consumed / SAMPLES_PER_MS, wins[i] if rms[i] >= self._min_rms else None))
            self._buf = self._buf[n * self._window :]
        return out

    def _decide(self, windows: list[_Window], confidences: list[float]) -> list[SpeechEvent]:
        """The start/stop hangover over the windows (confidences: one per loud window, in order)."""
        events: list[SpeechEvent] = []
        scores = iter(confidences)
        for w in windows:
            t0, t1 = w.t0, w.t1
            voiced = w.pcm is not None and next(scores) >= self.threshold
            if not self.speaking:
                if not voiced:
                    if self._candidate_ms is not None and self.report_candidates:
                        events.append(SpeechEvent("candidate_dropped", t0))
                    self._candidate_ms = None
                    continue
                if self._candidate_ms is None:
                    self._candidate_ms = t0
                    if self.report_candidates and self.start_ms > self.window_ms:
                        events.append(SpeechEvent("candidate", t0))
                if t1 - self._candidate_ms >= self.start_ms:
                    self.speaking, self._last_voiced_end_ms = True, t1
                    events.append(SpeechEvent("start", self._candidate_ms))
                    self._candidate_ms = None
            elif voiced:
                self._last_voiced_end_ms = t1
            elif t1 - self._last_voiced_end_ms >= self.stop_ms:
                self.speaking = False
                events.append(SpeechEvent("end", self._last_voiced_end_ms))
        return events


def process_batch(analyzers: list[SpeechAnalyzer], pcms: list[bytes | np.ndarray]) -> list[list[SpeechEvent]]:
    """`analyzer.process(pcm)` for each pair, with one Silero run per window position across calls.

    A call's windows go through its model state in order; window j of every call that has one is
    scored in the j-th run. Analyzers with different models are scored separately.
    """
    windows = [a._take_windows(p) for a, p in zip(analyzers, pcms, strict=True)]
    loud = [[w.pcm for w in ws if w.pcm is not None] for ws in windows]
    scores: list[list[float]] = [[] for _ in analyzers]
    for j in range(max((len(lw) for lw in loud), default=0)):
        by_model: dict[int, list[int]] = {}
        for i, lw in enumerate(loud):
            if j < len(lw):
                by_model.setdefault(id(analyzers[i].model), []).append(i)
        for idx in by_model.values():
            model = analyzers[idx[0]].model
            conf = model.score([analyzers[i]._stream for i in idx], np.stack([loud[i][j] for i in idx]))
            for k, i in enumerate(idx):
                scores[i].append(float(conf[k]))
    return [a._decide(ws, sc) for a, ws, sc in zip(analyzers, windows, scores, strict=True)]


_VAD_BATCHER: TickBatcher[tuple[SpeechAnalyzer, bytes], list[SpeechEvent]] = TickBatcher(
    lambda items: process_batch([a for a, _ in items], [p for _, p in items]), "vad", check=lambda item: check_pcm(item[1])
)


class SpeechDetector(FrameProcessor):
    """Pushes SpeechStartedFrame / SpeechEndedFrame (and SpeechCandidateFrame) downstream; Silero runs batched with every other
    live call's on the shared inference thread (processors/batching.py), never on the event loop.
    After a (full) StopDetectorsFrame from upstream it forwards audio without analysing it."""

    def __init__(self, analyzer: SpeechAnalyzer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.analyzer = analyzer or SpeechAnalyzer(report_candidates=True)
        self.stopped = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StopDetectorsFrame) and not frame.amd_only:
            self.stopped = True
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and not self.stopped:
            for event in await _VAD_BATCHER.submit((self.analyzer, frame.audio)):
                if event.kind == "start":
                    await self.push_frame(SpeechStartedFrame(t_ms=event.t_ms))
                elif event.kind == "end":
                    await self.push_frame(SpeechEndedFrame(t_ms=event.t_ms))
                else:
                    await self.push_frame(SpeechCandidateFrame(t_ms=event.t_ms, active=event.kind == "candidate"))
