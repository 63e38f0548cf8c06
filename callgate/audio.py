"""Audio file I/O and the telephone format: everything in callgate runs on 8 kHz mono PCM16.

µ-law coding uses the stdlib codec (`audioop`, as Pipecat does); resampling uses soxr.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

try:  # Python <= 3.12 ships audioop; 3.13+ gets it from the audioop-lts package (as Pipecat does).
    import audioop
except ImportError:  # pragma: no cover
    import audioop_lts as audioop  # type: ignore[no-redef]

import soxr

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160 samples = 160 µ-law bytes
ULAW_SILENCE = b"\xff"


class AudioFormatError(ValueError):
    """A file that is not a readable WAV or raw µ-law stream."""


def ulaw_to_pcm(data: bytes) -> bytes:
    """µ-law bytes -> PCM16 little-endian bytes (same sample count)."""
    return audioop.ulaw2lin(data, 2)


def pcm_to_ulaw(data: bytes) -> bytes:
    """PCM16 little-endian bytes -> µ-law bytes."""
    return audioop.lin2ulaw(data, 2)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 with clipping."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def to_float(x: np.ndarray | bytes) -> np.ndarray:
    """PCM16 (array or bytes) -> float32 in [-1, 1]."""
    if isinstance(x, bytes | bytearray | memoryview):
        x = np.frombuffer(x, dtype=np.int16)
    return x.astype(np.float32) / 32768.0


def resample(x: np.ndarray, in_rate: int, out_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Float or int16 mono audio resampled with soxr (high quality, whole-file)."""
    if in_rate == out_rate:
        return x
    y = soxr.resample(x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0), in_rate, out_rate)
    return to_int16(y) if x.dtype == np.int16 else y.astype(np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """Read a WAV (any rate, channels, 8/16/32-bit PCM or µ-law) or raw .ulaw file as 8 kHz mono int16."""
    path = Path(path)
    if path.is_dir():
        raise AudioFormatError(f"{path}: a folder, not an audio file")
    if not path.is_file():
        raise AudioFormatError(f"{path}: no such file")
    if path.suffix.lower() in (".ulaw", ".mulaw", ".ul", ".raw"):
        return np.frombuffer(ulaw_to_pcm(path.read_bytes()), dtype=np.int16).copy()
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFormatError(f"{path}: not a WAV file (expected RIFF/WAVE) or raw .ulaw")
    fmt_tag = int.from_bytes(data[20:22], "little") if len(data) > 22 else 0
    if fmt_tag == 7:  # WAVE_FORMAT_MULAW: the stdlib wave module refuses it, so parse the chunks.
        return _load_ulaw_wav(path, data)
    try:
        with wave.open(str(path), "rb") as w:
            rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise AudioFormatError(f"{path}: unreadable WAV ({e})") from e
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2")
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioFormatError(f"{path}: unsupported sample width {width * 8} bits")
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return resample(np.ascontiguousarray(x, dtype=np.int16), rate, SAMPLE_RATE)


def _load_ulaw_wav(path: Path, data: bytes) -> np.ndarray:
    pos, rate, ch, pcm = 12, SAMPLE_RATE, 1, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            ch, rate = int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little")
        elif cid == b"data":
            pcm = np.frombuffer(ulaw_to_pcm(body), dtype=np.int16)
        pos += 8 + size + (size & 1)
    if pcm is None:
        raise AudioFormatError(f"{path}: µ-law WAV without a data chunk")
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return resample(pcm, rate, SAMPLE_RATE)


def save_wav(path: str | Path, x: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write mono int16 (or float in [-1, 1]) audio as a PCM16 WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.dtype != np.int16:
        x = to_int16(x)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.astype("<i2").tobytes())
    return path


def pad_to_frames(ulaw: bytes, frame_bytes: int = FRAME_SAMPLES) -> bytes:
    """Pad µ-law audio with silence to a whole number of 20 ms frames."""
    rem = len(ulaw) % frame_bytes
    return ulaw if rem == 0 else ulaw + ULAW_SILENCE * (frame_bytes - rem)
