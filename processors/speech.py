"""Far-end speech activity in audio time, from Pipecat's bundled Silero VAD (ONNX, 8 kHz).

Pipecat's own VAD frames carry wall-clock timestamps; workflows and replay need audio time, so this
processor wraps the same SileroVADAnalyzer and stamps its transitions with the call's audio clock.
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.frames import SpeechEndedFrame, SpeechStartedFrame

SAMPLES_PER_MS = SAMPLE_RATE // 1000
DEFAULT_VAD_PARAMS = VADParams(confidence=0.6, start_secs=0.1, stop_secs=0.2, min_volume=0.3)


class SpeechDetector(FrameProcessor):
    """Pushes SpeechStartedFrame / SpeechEndedFrame (downstream) as the far end starts and stops talking.

    Onset and end times are back-dated by the VAD's start/stop hangover so they mark the audio itself.
    Silero runs in the analyzer's own executor thread, never on the event loop.
    """

    def __init__(self, params: VADParams | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._params = params or DEFAULT_VAD_PARAMS
        self._vad = SileroVADAnalyzer(sample_rate=SAMPLE_RATE, params=self._params)
        self._vad.set_sample_rate(SAMPLE_RATE)  # sizes the analysis window; Pipecat does this on StartFrame
        self._samples = 0
        self._speaking = False

    @property
    def speaking(self) -> bool:
        return self._speaking

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._samples += len(frame.audio) // 2
            state = await self._vad.analyze_audio(frame.audio)
            now_ms = self._samples / SAMPLES_PER_MS
            if state == VADState.SPEAKING and not self._speaking:
                self._speaking = True
                onset = max(0.0, now_ms - 1000 * self._params.start_secs - 32)
                await self.push_frame(SpeechStartedFrame(t_ms=onset))
            elif state == VADState.QUIET and self._speaking:
                self._speaking = False
                await self.push_frame(SpeechEndedFrame(t_ms=max(0.0, now_ms - 1000 * self._params.stop_secs)))

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._vad.cleanup()
