"""Speech events -> Pipecat's VAD frames, for the STT services (Deepgram's Finalize, segmented STTs).

callgate's SpeechDetector stamps speech in audio time; Pipecat's STT services listen for
VADUserStartedSpeakingFrame / VADUserStoppedSpeakingFrame instead (Deepgram sends `Finalize` on the
stop, a segmented STT cuts its segment there). This passes both on and adds the VAD frames.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import SpeechEndedFrame, SpeechStartedFrame


class VadFrameBridge(FrameProcessor):
    """Pushes a VAD frame after each SpeechStartedFrame / SpeechEndedFrame."""

    def __init__(self, start_secs: float = 0.096, stop_secs: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self._start_secs, self._stop_secs = start_secs, stop_secs

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, SpeechStartedFrame):
            await self.push_frame(VADUserStartedSpeakingFrame(start_secs=self._start_secs))
        elif isinstance(frame, SpeechEndedFrame):
            await self.push_frame(VADUserStoppedSpeakingFrame(stop_secs=self._stop_secs))
