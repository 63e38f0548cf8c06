"""Voicemail messages: any WAV or raw µ-law file, converted to 8 kHz µ-law once and cached.

The cache key is the file's path, size and mtime, so editing the message invalidates it. The audio is
padded to whole 20 ms frames so every outbound media message is a clean multiple of 160 bytes.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from callgate.audio import FRAME_SAMPLES, load_audio, pad_to_frames, pcm_to_ulaw, ulaw_to_pcm

DEFAULT_MESSAGE = Path(__file__).parent / "assets" / "default_message.ulaw"


@dataclass(frozen=True)
class Message:
    """A message ready to play: PCM16 8 kHz (what the pipeline carries), whole 20 ms frames."""

    source: Path
    pcm: bytes

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / 2 / 8


class MessageCache:
    """Converts each message file once (to a .ulaw in cache_dir) and keeps it in memory."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._memory: dict[str, Message] = {}
        self._lock = threading.Lock()

    def get(self, path: Path | str | None) -> Message:
        """The message for `path` (None = the shipped default). Raises AudioFormatError on bad files."""
        src = Path(path).expanduser().resolve() if path else DEFAULT_MESSAGE
        stat = src.stat()
        key = hashlib.sha1(f"{src}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        cached = self.cache_dir / f"{src.stem}-{key}.ulaw"
        if cached.is_file():
            ulaw = cached.read_bytes()
        else:
            ulaw = pad_to_frames(pcm_to_ulaw(load_audio(src).tobytes()), FRAME_SAMPLES)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(ulaw)
            tmp.replace(cached)
        message = Message(source=src, pcm=ulaw_to_pcm(ulaw))
        with self._lock:
            self._memory[key] = message
        return message
