"""The offline STT: pocketsphinx's English model, which ships inside its PyPI wheel (nothing downloads).

`PocketsphinxSTTService` is a Pipecat SegmentedSTTService: the VAD frames the user aggregator broadcasts
cut the caller's speech into segments, and each segment is decoded in a worker process of the shared
`DecoderPool` (pipelines/services/sphinx.py: pocketsphinx holds the GIL while it decodes, so a thread
would still stall the event loop). Accuracy on telephone speech is modest (see
scripts/measure_offline_voices.py); it is a no-keys default, not a replacement for Deepgram.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame, StartFrame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from callgate.audio import SAMPLE_RATE
from pipelines.services.sphinx import DecoderPool, shared_pool


class PocketsphinxSTTService(SegmentedSTTService):
    """Pipecat STT on pocketsphinx: one final TranscriptionFrame per VAD segment."""

    def __init__(self, *, pool: DecoderPool | None = None, **kwargs) -> None:
        super().__init__(
            sample_rate=SAMPLE_RATE,
            settings=STTSettings(model="pocketsphinx-en-us", language="en"),
            ttfs_p99_latency=1.5,
            **kwargs,
        )
        self._pool = pool or shared_pool()
        self.in_flight = 0  # segments sent to a decoder whose text has not come back yet

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame):
        await super().start(frame)
        self._pool.warm()  # the workers load their decoders while AMD listens, not on the first words

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        self.in_flight += 1
        try:
            text = await self._pool.transcribe(audio, self.sample_rate)
            await self.stop_ttfb_metrics()
            if text:  # still in flight while the frame is pushed: a workflow waiting for words sees it busy
                yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True)
        finally:
            self.in_flight -= 1
