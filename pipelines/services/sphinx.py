"""pocketsphinx, the offline recognizer, decoding in worker processes.

pocketsphinx's Python binding holds the GIL while it decodes: measured here, a 4 s segment of noise
decoding in a thread stalled the event loop for 4 s, and every live call's 20 ms frames share that
loop. So decoding runs in a small pool of child processes (`DecoderPool`, shared by the calls of a
server process), each keeping one loaded decoder; the loop only awaits the result. This module imports
nothing heavy (numpy, soxr, pocketsphinx), so a fresh worker is ready in about a second.

`PocketsphinxRecognizer` is the plain part (8 kHz PCM16 in, text out), usable in-process by scripts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from loguru import logger

from callgate.audio import SAMPLE_RATE, resample, to_float, to_int16

MAX_SEGMENT_SECS = 30.0  # a longer segment (a hostile or broken line) is decoded from its first 30 s only


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


_worker_recognizer: PocketsphinxRecognizer | None = None


def _worker() -> PocketsphinxRecognizer:
    """In a worker process: its one recognizer, with the decoder loaded."""
    global _worker_recognizer
    if _worker_recognizer is None:
        _worker_recognizer = PocketsphinxRecognizer()
        _worker_recognizer._get()
    return _worker_recognizer


def _worker_transcribe(pcm: bytes, rate: int) -> str:
    return _worker().transcribe(pcm, rate)


def _worker_warm() -> int:
    """Load the decoder now, so the first caller's words do not wait for it; returns the worker's pid."""
    _worker()
    return os.getpid()


class DecoderPool:
    """pocketsphinx decodes in `workers` child processes (spawned, so no lock or thread of the server is
    inherited); a crashed worker breaks the pool, which is rebuilt for the next segment."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._warmed = False
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def warm(self) -> None:
        """Start the workers and load their decoders in the background (returns at once; once per pool)."""
        if self._warmed:
            return
        self._warmed = True
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(_worker_warm)

    def _submit(self, pool: ProcessPoolExecutor, pcm: bytes, rate: int) -> Future[str]:
        limit = int(MAX_SEGMENT_SECS * rate) * 2
        if len(pcm) > limit:
            logger.warning(f"offline STT: a {len(pcm) / 2 / rate:.0f} s segment, decoding its first {MAX_SEGMENT_SECS:.0f} s")
            pcm = pcm[:limit]
        return pool.submit(_worker_transcribe, pcm, rate)

    def _lost(self, pool: ProcessPoolExecutor) -> str:
        """A worker died (the pool is broken): the segment is lost; the next one gets a fresh pool."""
        logger.error("offline STT: a decoder process died; the segment is lost, the pool restarts")
        with self._lock:
            if self._pool is pool:
                self._pool, self._warmed = None, False
        pool.shutdown(wait=False, cancel_futures=True)
        return ""

    async def transcribe(self, pcm: bytes, rate: int = SAMPLE_RATE) -> str:
        """Decode one segment in a worker; '' when nothing was recognized or the worker died."""
        if not pcm:
            return ""
        pool = self._executor()
        try:  # a pool broken by an earlier death refuses the submit itself
            return await asyncio.wrap_future(self._submit(pool, pcm, rate))
        except BrokenProcessPool:
            return self._lost(pool)

    def transcribe_blocking(self, pcm: bytes, rate: int = SAMPLE_RATE) -> str:
        """The same, for a caller on a plain thread (it waits without holding the GIL)."""
        if not pcm:
            return ""
        pool = self._executor()
        try:
            return self._submit(pool, pcm, rate).result()
        except BrokenProcessPool:
            return self._lost(pool)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_shared: DecoderPool | None = None
_shared_lock = threading.Lock()


def shared_pool(workers: int = 2) -> DecoderPool:
    """The process's one decoder pool (created on first use with `workers` processes; later calls get
    the same pool)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DecoderPool(workers)
        return _shared
