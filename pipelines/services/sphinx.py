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
import contextlib
import multiprocessing
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

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
        return self._decode(pcm, rate)[0]

    def words(self, pcm: bytes, rate: int = SAMPLE_RATE) -> list[tuple[str, float]]:
        """Decode one utterance; each segment pocketsphinx gives (words, and its `<sil>`, `[noise]`
        fillers) with its end time in ms from the start of `pcm`."""
        return self._decode(pcm, rate)[1]

    def _decode(self, pcm: bytes, rate: int) -> tuple[str, list[tuple[str, float]]]:
        x = np.frombuffer(pcm, dtype=np.int16)
        if len(x) == 0:
            return "", []
        y16 = to_int16(resample(to_float(x), rate, self.MODEL_RATE)) if rate != self.MODEL_RATE else x
        with self._lock:
            d = self._get()
            d.start_utt()
            d.process_raw(y16.tobytes(), full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            frame_ms = 1000.0 / d.config["frate"]
            segments = [(seg.word, (seg.end_frame + 1) * frame_ms) for seg in d.seg()]
        text = " ".join(w for w in (hyp.hypstr if hyp else "").split() if not w.startswith("<"))
        return text, segments


def _serve(conn: Connection) -> None:
    """A worker process: load the decoder, then decode (pcm, rate) messages until None or the parent is gone."""
    rec = PocketsphinxRecognizer()
    rec._get()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        conn.send(rec.transcribe(*msg))


class _Worker:
    """One decoder process and the pipe to it (a daemon: it ends with the server process)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="callgate-pocketsphinx")
        self.proc.start()
        child.close()

    def call(self, pcm: bytes, rate: int) -> str:
        self.conn.send((pcm, rate))
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        self.proc.join(1.0)
        if self.proc.is_alive():
            self.proc.kill()


class DecoderPool:
    """pocketsphinx decodes in `workers` daemon child processes (spawned, so no lock or thread of the
    server is inherited), each fed by its own thread over a pipe; a worker that dies loses the segment it
    had and is replaced. (concurrent.futures' ProcessPoolExecutor was the first choice: its workers
    missed their shutdown sentinel when the pool lived in a uvicorn worker process, which then never
    exited.)"""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()  # None: the pool closed
        self._all: list[_Worker] = []
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start the workers (they load their decoders in the background); returns at once."""
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="pocketsphinx")
                for _ in range(self.workers):
                    self._add()

    def _add(self) -> None:
        w = _Worker()
        self._all.append(w)
        self._idle.put(w)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all if w.proc.pid is not None]

    def transcribe_blocking(self, pcm: bytes, rate: int = SAMPLE_RATE) -> str:
        """Decode one segment in a worker, waiting (without the GIL) on this thread; '' when nothing was
        recognized or the worker died."""
        if not pcm:
            return ""
        limit = int(MAX_SEGMENT_SECS * rate) * 2
        if len(pcm) > limit:
            logger.warning(f"offline STT: a {len(pcm) / 2 / rate:.0f} s segment, decoding its first {MAX_SEGMENT_SECS:.0f} s")
            pcm = pcm[:limit]
        self.warm()
        idle = self._idle
        w = idle.get()
        if w is None:  # closed while this segment waited for a worker
            idle.put(None)  # ... and so were the others waiting
            return ""
        try:
            return w.call(pcm, rate)
        except (EOFError, OSError):
            logger.error("offline STT: a decoder process died; the segment is lost, a new one starts")
            w.stop()
            with self._lock:
                if w in self._all:  # not closed meanwhile: replace it (the dead one is not put back below)
                    self._all.remove(w)
                    self._add()
            return ""
        finally:
            with self._lock:
                if w in self._all:
                    self._idle.put(w)

    async def transcribe(self, pcm: bytes, rate: int = SAMPLE_RATE) -> str:
        """The same, awaited: the pool's own threads wait on the workers, so queued segments never hold
        the loop's default executor."""
        self.warm()
        assert self._threads is not None
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.transcribe_blocking, pcm, rate)

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
            threads, self._threads = self._threads, None
            idle, self._idle = self._idle, queue.SimpleQueue()
        idle.put(None)  # wakes the segments still waiting for a worker: they get ''
        for w in workers:
            w.stop()
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


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
