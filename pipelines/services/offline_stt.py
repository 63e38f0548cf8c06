"""The offline STT: pocketsphinx's English model, which ships inside its PyPI wheel (nothing downloads).

`PocketsphinxRecognizer` is the plain part (8 kHz PCM16 in, text out, no asyncio); it upsamples to the
model's 16 kHz features. `PocketsphinxSTTService` is a Pipecat SegmentedSTTService: the VAD frames the user
aggregator broadcasts cut the caller's speech into segments, and each segment is decoded on the service's
own single worker thread, never on the event loop. Accuracy on telephone speech is modest (see
scripts/measure_offline_voices.py); it is a no-keys default, not a replacement for Deepgram.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from callgate.audio import SAMPLE_RATE, resample, to_float, to_int16


class PocketsphinxRecognizer:
    """One pocketsphinx decoder (not thread-safe: one per service, used from one thread)."""

    MODEL_RATE = 16000

    def __init__(self) -> None:
        self._decoder = None
        self._lock = threading.Lock()

    def _get(self):
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(samprate=self.MODEL_RATE, loglevel="FATAL")
        return self._decoder

    def transcribe(self, pcm: bytes, rate: int = SAMPLE_RATE) -> str:
        """Decode one utterance of PCM16 mono; '' when nothing was recognized."""
        x = np.frombuffer(pcm, dtype=np.int16)
        if len(x) == 0:
            return ""
        y16 = to_int16(resample(to_float(x), rate, self.MODEL_RATE)) if rate != self.MODEL_RATE else x
        with self._lock:
            d = self._get()
            d.start_utt()
            d.process_raw(y16.tobytes(), full_utt=True)
            d.end_utt()
            hyp = d.hyp()
        return " ".join(w for w in (hyp.hypstr if hyp else "").split() if not w.startswith("<"))


class PocketsphinxSTTService(SegmentedSTTService):
    """Pipecat STT on pocketsphinx: one final TranscriptionFrame per VAD segment."""

    def __init__(self, *, recognizer: PocketsphinxRecognizer | None = None, **kwargs) -> None:
        super().__init__(
            sample_rate=SAMPLE_RATE,
            settings=STTSettings(model="pocketsphinx-en-us", language="en"),
            ttfs_p99_latency=1.5,
            **kwargs,
        )
        self._recognizer = recognizer or PocketsphinxRecognizer()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketsphinx")

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def cleanup(self):
        await super().cleanup()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(self._executor, self._recognizer.transcribe, audio, self.sample_rate)
        await self.stop_ttfb_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True)
