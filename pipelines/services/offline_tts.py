"""The offline voice: flite (or espeak-ng) from Debian, 8 kHz PCM16, with word timestamps from flite's phones.

`LocalVoice` is the plain part (text in, PCM and word start times out, no asyncio); `LocalTTSService` is
the thin Pipecat TTS service around it. Synthesis runs in a subprocess, so the event loop never waits on
it. Word times: flite prints every phone with its end time (`-psdur`) and the words it spoke (`-pw`);
cmudict (shipped in the pocketsphinx wheel) says how many phones each word has, which places each word's
start. When the counts disagree (a word flite spells out) the words share the speech time in proportion
to their length. espeak-ng prints no timings, so it gets the proportional estimate only.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from callgate.audio import SAMPLE_RATE, AudioFormatError, load_audio

FLITE_VOICES = ("slt", "kal", "awb", "rms", "kal16")
_WORD_RE = re.compile(r"[A-Za-z0-9']+")


class LocalVoiceError(RuntimeError):
    """The offline TTS engine is missing or failed (the message names the apt package)."""


@lru_cache(maxsize=1)
def _cmudict_phone_counts() -> dict[str, int]:
    """Phones per word from the cmudict that ships inside the pocketsphinx wheel (no download)."""
    from pocketsphinx import get_model_path

    counts: dict[str, int] = {}
    path = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and "(" not in parts[0]:
                counts[parts[0]] = len(parts) - 1
    return counts


@dataclass
class Synthesis:
    """One synthesized clause: PCM16 at 8 kHz and (word, start seconds) for each word of the text."""

    pcm: bytes
    words: list[tuple[str, float]]

    @property
    def duration_secs(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


def _proportional(words: list[str], spans: list[tuple[float, float]]) -> list[float]:
    """Start times that share the speech spans among words in proportion to their length."""
    total = sum(e - s for s, e in spans)
    if not words:
        return []
    if total <= 0:
        return [0.0] * len(words)
    weights = np.array([max(1, len(w)) for w in words], dtype=np.float64)
    offsets = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / weights.sum() * total
    starts = []
    for off in offsets:
        for s, e in spans:  # walk the spans, skipping pauses
            if off <= e - s:
                starts.append(s + off)
                break
            off -= e - s
        else:
            starts.append(spans[-1][1])
    return starts


def word_starts_from_phones(
    text_words: list[str], flite_words: list[str], phones: list[tuple[str, float, float]]
) -> list[float]:
    """Each text word's start from flite's phone segmentation (see the module docstring)."""
    speech = [(s, e) for p, s, e in phones if p != "pau"]
    if not text_words:
        return []
    if not speech:
        return [0.0] * len(text_words)
    counts = _cmudict_phone_counts()
    per_word = [counts.get(w.lower()) for w in flite_words]
    if flite_words and all(per_word) and sum(per_word) == len(speech):  # type: ignore[arg-type]
        starts, i = [], 0
        for n in per_word:
            starts.append(speech[i][0])
            i += n  # type: ignore[operator]
    else:
        # Merge adjacent phones into spans so pauses are not given to words.
        spans: list[tuple[float, float]] = []
        for s, e in speech:
            if spans and abs(spans[-1][1] - s) < 1e-6:
                spans[-1] = (spans[-1][0], e)
            else:
                spans.append((s, e))
        starts = _proportional(flite_words or text_words, spans)
    if len(starts) == len(text_words):
        return starts
    n = len(starts)
    return [starts[min(n - 1, round(i * n / len(text_words)))] for i in range(len(text_words))]


class LocalVoice:
    """Synthesizes text with flite or espeak-ng (installed by scripts/system_deps.sh), 8 kHz PCM16."""

    def __init__(self, engine: str = "flite", voice: str = "slt", rate_wpm: int | None = None) -> None:
        if engine not in ("flite", "espeak-ng"):
            raise ValueError(f"unknown offline TTS engine {engine!r} (flite or espeak-ng)")
        self.engine = engine
        self.voice = voice or ("slt" if engine == "flite" else "en-us")
        self.rate_wpm = rate_wpm
        self.exe = shutil.which(engine)

    def _check(self) -> str:
        if self.exe is None:
            raise LocalVoiceError(
                f"{self.engine} not found: install it with `apt-get install -y {self.engine}` "
                "(scripts/system_deps.sh does)"
            )
        return self.exe

    def commands(self, text: str, out: Path) -> tuple[list[str], list[str] | None]:
        """The synthesis command and (flite only) the word-listing command."""
        exe = self._check()
        if self.engine == "flite":
            opts = ["-voice", self.voice]
            if self.rate_wpm:
                opts += ["--setf", f"duration_stretch={175.0 / self.rate_wpm:.3f}"]
            return [exe, *opts, "-psdur", "-t", text, "-o", str(out)], [exe, *opts, "-pw", "-t", text, "-o", "none"]
        opts = ["-v", self.voice] + (["-s", str(self.rate_wpm)] if self.rate_wpm else [])
        return [exe, *opts, "-w", str(out), "--", text], None

    @staticmethod
    def parse_phones(psdur: str) -> list[tuple[str, float, float]]:
        """'pau:0.164 hh:0.255 ...' -> [(phone, start, end)]."""
        out, prev = [], 0.0
        for tok in psdur.split():
            name, _, end = tok.rpartition(":")
            try:
                t = float(end)
            except ValueError:
                continue
            out.append((name, prev, t))
            prev = t
        return out

    def finish(self, text: str, wav: Path, psdur: str, pw: str) -> Synthesis:
        """Read the WAV (resampled to 8 kHz) and place the words."""
        try:
            pcm = load_audio(wav)
        except AudioFormatError as e:
            raise LocalVoiceError(f"{self.engine} wrote no usable audio: {e}") from e
        words = text.split()
        if self.engine == "flite":
            starts = word_starts_from_phones(words, pw.split(), self.parse_phones(psdur))
        else:
            x = np.abs(pcm.astype(np.float32))
            loud = np.nonzero(x > 0.02 * (x.max() + 1e-9))[0]
            span = [(loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE)] if len(loud) else [(0.0, 0.0)]
            starts = _proportional(words, span)
        return Synthesis(pcm=pcm.astype(np.int16).tobytes(), words=list(zip(words, starts, strict=True)))

    def synthesize(self, text: str) -> Synthesis:
        """Blocking synthesis (scripts and tests; the service uses `asynthesize`)."""
        import subprocess

        with tempfile.TemporaryDirectory(prefix="callgate-voice-") as tmp:
            out = Path(tmp) / "tts.wav"
            cmd, pw_cmd = self.commands(text, out)
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                raise LocalVoiceError(f"{self.engine} failed ({res.returncode}): {res.stderr.strip()[:200]}")
            pw = subprocess.run(pw_cmd, capture_output=True, text=True, timeout=30).stdout if pw_cmd else ""
            return self.finish(text, out, res.stdout, pw)

    async def asynthesize(self, text: str) -> Synthesis:
        """Synthesis in child processes; the event loop only waits on pipes."""
        with tempfile.TemporaryDirectory(prefix="callgate-voice-") as tmp:
            out = Path(tmp) / "tts.wav"
            cmd, pw_cmd = self.commands(text, out)

            async def run(c: list[str]) -> tuple[int, str, str]:
                p = await asyncio.create_subprocess_exec(
                    *c, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
                )
                try:
                    so, se = await p.communicate()
                except asyncio.CancelledError:  # barge-in: the clause is no longer wanted
                    if p.returncode is None:
                        p.kill()
                    raise
                return p.returncode or 0, so.decode(errors="replace"), se.decode(errors="replace")

            jobs = [run(cmd)] + ([run(pw_cmd)] if pw_cmd else [])
            results = await asyncio.gather(*jobs)
            rc, psdur, err = results[0]
            if rc != 0:
                raise LocalVoiceError(f"{self.engine} failed ({rc}): {err.strip()[:200]}")
            pw = results[1][1] if pw_cmd else ""
            return await asyncio.to_thread(self.finish, text, out, psdur, pw)


class LocalTTSService(TTSService):
    """Pipecat TTS on the offline voice: audio in 20 ms frames plus word timestamps (like Cartesia's)."""

    def __init__(self, *, voice: LocalVoice | None = None, **kwargs) -> None:
        super().__init__(
            push_text_frames=False,
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=SAMPLE_RATE,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._voice = voice or LocalVoice()
        self._context_offset: dict[str, float] = {}

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Synthesize one clause; word times are offset by what this turn has already said."""
        if not text.strip():
            return
        try:
            synth = await self._voice.asynthesize(text.strip())
        except (LocalVoiceError, OSError) as e:
            yield ErrorFrame(error=f"offline TTS failed: {e}")
            return
        await self.stop_ttfb_metrics()
        offset = self._context_offset.get(context_id, 0.0)
        self._context_offset = {context_id: offset + synth.duration_secs}  # one turn at a time
        step = SAMPLE_RATE // 50 * 2  # 20 ms of PCM16
        pcm = synth.pcm
        for i in range(0, len(pcm), step):
            yield TTSAudioRawFrame(pcm[i : i + step], SAMPLE_RATE, 1, context_id=context_id)
            if i == 0 and synth.words:
                await self.add_word_timestamps([(w, offset + t) for w, t in synth.words], context_id)
