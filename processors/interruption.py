"""Barge-in while the bot talks: pause at once, then decide (barge-in, backchannel or noise).

VAD stays hot during bot audio. When the caller starts speaking over it, the bot *pauses* (the player
stops feeding Twilio, whose buffer is kept a few frames short, so the caller hears silence within
that buffer's length and no `clear` is needed yet). Then the analyzer decides:

- barge-in: the speech goes on past `barge_in_min_ms`, or its transcript takes the floor (more than
  two words that are not all continuers, or a floor word: "wait", "stop", "no", "sorry", ...) ->
  `clear` at once, the reply is cancelled;
- backchannel: short ("uh-huh", "yeah", "right", "mm-hmm", "okay"), by duration and by transcript (one
  or two words that do not take the floor count too: an unsure STT hears "a ha" for "uh-huh") ->
  the bot resumes where it paused, no `clear`;
- noise: short and no words at all (a cough, a door) -> resume.

A confirmed barge-in that afterwards turns out to be a backchannel or noise (short, no real words)
resumes the bot's turn from the first word the caller did not hear (false-interruption recovery).

A bot turn whose first audio comes while the caller is already talking (a slow greeting, a caller who
speaks first) is treated as speech over the bot from the caller's own onset: it pauses at once, and the
caller who goes on gets the floor; the bot never starts over them. A lone "Hello?" that meets the
start of a bot turn is the caller's opening, which that turn answers: it resumes (`OPENERS`).

Early cue (two-stage): the 20 ms frames from the caller's energy onset (a frame at the gate's open
threshold, not Silero's start, which comes 100-400 ms into a line) go through a small audio-only
classifier (`BargeCue`: log-mel shape and level contour of the first 200 ms -> a one-hidden-layer MLP,
trained offline on synthetic voices by scripts/train_barge_cue.py, weights in processors/data). A
confident "this takes the floor" clears at once, ~200 ms into the speech; anything else (a continuer,
a cough, an unsure score) waits for words or duration as above. An early barge-in that never becomes
VAD speech (a noise after all) resumes the bot (false-interruption recovery).

The gate's two-stage opening: its tentative opening (`CallerSpeechTentativeFrame`) pauses the bot at
once; words heard until the gate decides never take the floor (they may be the TV's); its confirmation
(the gated SpeechStartedFrame) goes on as above, its revocation (`CallerSpeechRevokedFrame`) resumes the
bot (`background`, event `background_ignored`).

Speech is the caller's only if the background-speech gate says so: any object with
`is_caller_speech(onset_ms, now_ms) -> bool` plugs in (`CallerSpeechGate`); without one, all speech
counts. `InterruptionAnalyzer` is plain logic on audio-time events; `InterruptionProcessor` adapts it
to frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.agent_frames import BargeInFrame, BotPauseFrame, BotPlaybackFrame, BotResumeFrame
from processors.frames import (
    CallerSpeechRevokedFrame,
    CallerSpeechTentativeFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
)

SAMPLES_PER_MS = SAMPLE_RATE // 1000
CUE_FRAME = 160  # 20 ms
CUE_PATH = Path(__file__).parent / "data" / "barge_cue.json"

BACKCHANNELS = frozenset(
    {
        "uh-huh", "uh huh", "uhhuh", "mm-hmm", "mm hmm", "mhm", "mmhm", "mm", "hmm", "yeah", "yes", "yep",
        "yup", "right", "okay", "ok", "sure", "alright", "all right", "i see", "got it", "uh", "um",
    }
)  # fmt: skip


# Words that take the floor even alone ("wait!"): a short utterance of one or two other words is
# treated like a continuer, so an unsure STT ("a ha" for "uh-huh") does not stop the bot.
FLOOR_WORDS = frozenset(
    {"stop", "wait", "no", "nope", "sorry", "hold", "excuse", "hang", "actually", "but", "what", "hey", "hello", "pardon"}
)


# Said as the bot's turn begins ("Hello?" as the greeting starts), these are the caller's own opening,
# which the turn answers: they do not take the floor from it.
OPENERS = frozenset({"hello", "hi", "hey", "yes", "yeah", "hallo", "hiya"})


def takes_floor(text: str, max_words: int = 2, *, openers: bool = False) -> bool:
    """Words that claim the turn: more than `max_words`, or a floor word, and not a pure continuer.
    `openers`: the speech began with the bot's turn, so a lone greeting word does not count."""
    if is_backchannel(text, max_words):
        return False
    tokens = normalize(text).replace("-", " ").split()
    floor = FLOOR_WORDS - OPENERS if openers else FLOOR_WORDS
    if openers and tokens and all(t.strip("'") in OPENERS for t in tokens):
        return False
    return len(tokens) > max_words or any(t.strip("'") in floor for t in tokens)


class CallerSpeechGate(Protocol):
    """The background-speech gate's hook: is the speech that began at `onset_ms` the caller's?"""

    def is_caller_speech(self, onset_ms: float, now_ms: float) -> bool: ...


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' -]", " ", text.lower()).split())


def is_backchannel(text: str, max_words: int = 2) -> bool:
    """True for a short continuer ("uh-huh", "yeah right"); False for anything with other words."""
    words = normalize(text)
    if not words:
        return False
    if words in BACKCHANNELS:
        return True
    tokens = words.replace("-", " ").split()
    if len(tokens) > max_words + 1:
        return False
    i = 0
    while i < len(tokens):  # every token (or token pair) must be a continuer
        pair = " ".join(tokens[i : i + 2])
        if pair in BACKCHANNELS:
            i += 2
        elif tokens[i] in BACKCHANNELS or tokens[i].replace("-", "") in BACKCHANNELS:
            i += 1
        else:
            return False
    return True


def mel_bank(n_fft: int = 256, bands: int = 12, lo_hz: float = 100.0, hi_hz: float = 3800.0) -> np.ndarray:
    """Triangular mel filters over an 8 kHz rFFT of `n_fft` points (bands x bins)."""
    freq = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    mel = np.linspace(2595 * np.log10(1 + lo_hz / 700), 2595 * np.log10(1 + hi_hz / 700), bands + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    fb = np.zeros((bands, len(freq)), np.float32)
    for i in range(bands):
        lo, c, hi = hz[i], hz[i + 1], hz[i + 2]
        fb[i] = np.clip(np.minimum((freq - lo) / (c - lo), (hi - freq) / (hi - c)), 0, None)
    return fb


_MEL = mel_bank()
_HANN = np.hanning(CUE_FRAME).astype(np.float32)


def frame_level_db(x: np.ndarray) -> float:
    """RMS level of one int16 frame, dBFS."""
    xf = x.astype(np.float32) * (1 / 32768)
    return float(10 * np.log10(float(xf @ xf) / len(xf) + 1e-10))


def frame_logmel(x: np.ndarray) -> np.ndarray:
    """12 log-mel band energies (dB) of one 20 ms int16 frame (~20 µs)."""
    xf = x.astype(np.float32) * (1 / 32768)
    s = np.abs(np.fft.rfft(xf * _HANN, 256)) ** 2 + 1e-10
    return 10 * np.log10(_MEL @ s + 1e-8)


def cue_features(levels: np.ndarray, mels: np.ndarray) -> np.ndarray:
    """The early cue's input from the first K frames after the onset: the spectral shape (each frame's
    log-mel less its mean) and the level contour (less its peak) pooled over five stretches of time, and
    how fast the spectrum moves (consonant-vowel transitions vs a steady "mmm")."""
    k = len(levels)
    shape = mels - mels.mean(1, keepdims=True)
    parts = np.array_split(np.arange(k), 5)
    pooled = np.stack([shape[i].mean(0) for i in parts])
    contour = np.array([levels[i].mean() for i in parts]) - levels.max()
    flux = np.abs(np.diff(shape, axis=0)).mean(1)
    return np.concatenate([pooled.ravel(), contour, [flux.mean(), flux.max(), levels.std()]])


class BargeCue:
    """p(the sound that just began over the bot takes the floor) from its first `frames` 20 ms frames.

    A one-hidden-layer MLP (68 -> 16 -> 1, numpy; microseconds) built by scripts/train_barge_cue.py
    from synthetic voices; its held-out figures are printed there and in README."""

    def __init__(self, weights: dict) -> None:
        self.frames = int(weights["frames"])
        self.mu, self.sd = np.asarray(weights["mu"]), np.asarray(weights["sd"])
        self.w1, self.b1 = np.asarray(weights["W1"]), np.asarray(weights["b1"])
        self.w2, self.b2 = np.asarray(weights["w2"]), float(weights["b2"])

    @classmethod
    def load(cls, path: Path | str = CUE_PATH) -> BargeCue:
        return cls(json.loads(Path(path).read_text()))

    def probability(self, levels: np.ndarray, mels: np.ndarray) -> float:
        z = (cue_features(levels, mels) - self.mu) / self.sd
        h = np.tanh(z @ self.w1 + self.b1)
        return float(1 / (1 + np.exp(-(h @ self.w2 + self.b2))))


@cache
def shipped_cue() -> BargeCue:
    return BargeCue.load()


class LevelGate(Protocol):
    """The background-speech gate's levels (dBFS): the line's noise floor, and the level that may be the
    caller (quieter speech is a TV or a colleague behind them)."""

    @property
    def floor_db(self) -> float: ...

    def open_threshold_db(self, t_ms: float | None = None) -> float: ...


class Verdict(Enum):
    PAUSE = "pause"  # caller speech over the bot: stop feeding audio, decide next
    BARGE_IN = "barge_in"  # confirmed: clear, cancel the reply
    BACKCHANNEL = "backchannel"  # resume, no clear
    NOISE = "noise"  # resume, no clear
    FALSE_INTERRUPTION = "false_interruption"  # after a barge-in: it was a backchannel or noise; resume
    BACKGROUND = "background"  # the gate revoked its tentative opening: background speech; resume


@dataclass
class InterruptionParams:
    barge_in_min_ms: float = 1200.0  # caller speech this long over the bot is a barge-in, words or not
    backchannel_max_ms: float = 1500.0  # longer speech is never a backchannel, whatever its transcript
    transcript_wait_ms: float = 500.0  # after short speech ends: wait this long for its transcript
    backchannel_max_words: int = 2
    early_threshold: float = 0.8  # early cue probability that clears at once (> 1: early cue off)
    early_onset_dbfs: float = -50.0  # a frame this loud starts the early cue (or the floor + margin if higher)
    early_floor_margin_db: float = 12.0  # ... and it must reach the gate's caller level within its frames
    early_false_ms: float = 600.0  # an early barge-in with no VAD speech by then was a noise: resume
    early_novad_ms: float = 450.0  # an early pause the cue did not confirm and the VAD never did: resume
    early_rearm_ms: float = 300.0  # quiet needed after one early look before the next
    opener_overlap_ms: float = 300.0  # speech that began before the bot's turn or this soon into it: an opener


@dataclass
class Decision:
    verdict: Verdict
    t_ms: float
    onset_ms: float
    text: str = ""
    speech_end_ms: float | None = None  # the caller had stopped by then (a barge-in decided on late words)


@dataclass
class InterruptionAnalyzer:
    """Caller speech and transcripts over bot audio -> pause / barge-in / resume decisions (audio time)."""

    params: InterruptionParams = field(default_factory=InterruptionParams)
    gate: CallerSpeechGate | None = None
    bot_speaking: bool = False
    state: str = "idle"  # idle | candidate (speaking) | ended (waiting for words) | interrupted
    onset_ms: float = 0.0
    end_ms: float | None = None
    text: str = ""
    finals: list[str] = field(default_factory=list)
    got_final: bool = False  # the STT has finalized this speech (possibly with no words)
    decisions: list[Decision] = field(default_factory=list)
    cue: BargeCue | None = None
    level_gate: LevelGate | None = None
    early: bool = False  # the current interruption was decided by the early cue
    vad_seen: bool = False  # the VAD reported speech since the current onset
    tentative: bool = False  # the current pause rests on the gate's tentative opening, not confirmed yet
    caller_speaking: bool = False  # the caller's (gated) speech is going on, bot audio or not
    caller_onset_ms: float = 0.0
    bot_start_ms: float | None = None  # when the bot's current stretch of audio began
    _cue_onset: float | None = None
    _cue_levels: list[float] = field(default_factory=list)
    _cue_mels: list[np.ndarray] = field(default_factory=list)
    _cue_done: bool = False  # looked at this sound already; re-armed after `early_rearm_ms` of quiet
    _quiet_ms: float = 0.0
    last_probability: float | None = None

    def _candidate(self, onset_ms: float, *, vad_seen: bool, tentative: bool = False) -> None:
        """Caller speech from onset_ms over the bot: a pause to decide, with nothing heard of it yet."""
        self.state, self.onset_ms, self.end_ms, self.text, self.finals = "candidate", onset_ms, None, "", []
        self.got_final, self.early, self.vad_seen, self.tentative = False, False, vad_seen, tentative

    def _decide(self, verdict: Verdict, t_ms: float) -> Decision:
        d = Decision(verdict, t_ms, self.onset_ms, self.heard_text, self.end_ms)
        self.decisions.append(d)
        if verdict in (Verdict.BACKCHANNEL, Verdict.NOISE, Verdict.FALSE_INTERRUPTION, Verdict.BACKGROUND):
            self.state = "idle"
        elif verdict is Verdict.BARGE_IN:
            self.state = "interrupted"
        return d

    @property
    def heard_text(self) -> str:
        return " ".join([*self.finals, self.text]).strip()

    @property
    def active(self) -> bool:
        """A pause or an interruption is being decided: caller transcripts are not a user turn yet."""
        return self.state in ("candidate", "ended")

    def set_bot_speaking(self, speaking: bool, now_ms: float = 0.0) -> Decision | None:
        """The player started or stopped feeding bot audio. A turn whose first audio comes while the
        caller is already talking (a greeting that took long to synthesize, a caller who talks first)
        does not start over them: it pauses at once and is decided like speech that began over it."""
        starting = speaking and not self.bot_speaking
        self.bot_speaking = speaking
        if starting:
            self.bot_start_ms = now_ms
        if not (starting and self.caller_speaking and self.state == "idle"):
            return None
        self._candidate(self.caller_onset_ms, vad_seen=True)
        return self._decide(Verdict.PAUSE, now_ms)

    def audio(self, pcm: np.ndarray, t0_ms: float) -> Decision | None:
        """One 20 ms frame of caller audio starting at t0_ms: the early cue's onset and look."""
        if not self.bot_speaking or self.cue is None or self.params.early_threshold > 1:
            self._cue_onset = None
            return None
        level = frame_level_db(pcm)
        threshold = self.params.early_onset_dbfs  # the onset as the cue was trained: the sound's first frame
        if self.level_gate is not None:
            threshold = max(threshold, self.level_gate.floor_db + self.params.early_floor_margin_db)
        if self._cue_done:
            self._quiet_ms = 0.0 if level >= threshold else self._quiet_ms + len(pcm) / SAMPLES_PER_MS
            if self._quiet_ms >= self.params.early_rearm_ms and self.state == "idle":
                self._cue_done = False
            return None
        if self._cue_onset is None:
            if level < threshold or self.state not in ("idle", "candidate"):
                return None
            self._cue_onset, self._cue_levels, self._cue_mels = t0_ms, [], []
        self._cue_levels.append(level)
        self._cue_mels.append(frame_logmel(pcm))
        end_ms = t0_ms + len(pcm) / SAMPLES_PER_MS
        caller = self.level_gate is None or level >= self.level_gate.open_threshold_db(t0_ms)
        if self.state == "idle" and caller:  # pause now: when the clear comes, Twilio's buffer has drained
            self._candidate(self._cue_onset, vad_seen=False, tentative=self.tentative)
            return self._decide(Verdict.PAUSE, end_ms)
        if len(self._cue_levels) < self.cue.frames:
            return None
        p = self.cue.probability(np.array(self._cue_levels), np.stack(self._cue_mels))
        onset, self._cue_onset, self._cue_done, self._quiet_ms = self._cue_onset, None, True, 0.0
        self.last_probability = p
        caller_level = self.level_gate is None or max(self._cue_levels) >= self.level_gate.open_threshold_db(t0_ms)
        if p < self.params.early_threshold or not caller_level or self.state not in ("idle", "candidate"):
            return None
        if self._opener(self.onset_ms if self.state == "candidate" else onset):
            return None  # it met the start of the bot's turn: a "Hello?" may be the caller's opening; words decide
        if self.state == "idle":
            self.onset_ms, self.end_ms, self.text, self.finals, self.got_final = onset, None, "", [], False
            self.vad_seen = False
        self.early = True
        return self._decide(Verdict.BARGE_IN, end_ms)

    def caller_tentative(self, t_ms: float, now_ms: float) -> Decision | None:
        """The gate opened tentatively on speech from t_ms: over the bot, pause at once (the caller hears
        silence within Twilio's short buffer); the confirmation (`speech_start`) or `caller_revoked` follows."""
        if not self.bot_speaking or self.state != "idle":
            return None
        self._candidate(t_ms, vad_seen=False, tentative=True)
        return self._decide(Verdict.PAUSE, now_ms)

    def caller_revoked(self, now_ms: float) -> Decision | None:
        """The gate revoked its tentative opening: the pause was for background speech; resume."""
        if not self.tentative:
            return None
        self.tentative = False
        if self.state != "candidate":  # an early-cue barge-in took over meanwhile
            return None
        return self._decide(Verdict.BACKGROUND, now_ms)

    def speech_start(self, t_ms: float, now_ms: float) -> Decision | None:
        self.tentative = False  # (the gate's confirmation, in its filter mode)
        caller = self.gate is None or self.gate.is_caller_speech(t_ms, now_ms)
        if caller:
            self.caller_speaking, self.caller_onset_ms = True, t_ms
        if self.state == "interrupted":
            self.vad_seen = True
            if self.end_ms is not None:
                self.end_ms = None  # the interrupter goes on talking
            return None
        if self.state == "candidate":
            self.vad_seen = True  # the early cue paused the bot already
        if not self.bot_speaking or self.state != "idle" or not caller:
            return None
        self._candidate(t_ms, vad_seen=True)  # (tentative was cleared above)
        return self._decide(Verdict.PAUSE, now_ms)

    def speech_end(self, t_ms: float, now_ms: float) -> Decision | None:
        self.caller_speaking = False
        if self.state == "candidate":
            self.state, self.end_ms = "ended", t_ms
        elif self.state == "interrupted":
            self.end_ms = t_ms
        return self.tick(now_ms)

    def transcript(self, text: str, final: bool, now_ms: float) -> Decision | None:
        if self.state == "idle":
            return None
        if final:
            if text.strip():
                self.finals.append(text.strip())
            self.text = ""
            self.got_final = True
        else:
            self.text = text.strip()
        words = self.heard_text
        if self.tentative:  # words in a tentative opening may be the TV's: the gate decides first
            return None
        if self.state in ("candidate", "ended") and words and self._takes_floor(words):
            return self._decide(Verdict.BARGE_IN, now_ms)
        return self.tick(now_ms)

    def tick(self, now_ms: float) -> Decision | None:
        p = self.params
        words = self.heard_text
        # a continuer, or one or two words that do not take the floor (likely a misheard continuer)
        backchannel = bool(words) and not self._takes_floor(words)
        if self.state == "candidate" and self.tentative:
            return None  # the gate confirms or revokes its tentative opening within its own time limit
        if self.state == "candidate" and not self.vad_seen and self._cue_onset is None:
            if now_ms - self.onset_ms >= p.early_novad_ms:  # the cue said no and the VAD hears no speech
                return self._decide(Verdict.NOISE, now_ms)
        elif self.state == "candidate":
            limit = p.backchannel_max_ms if backchannel else p.barge_in_min_ms
            if now_ms - self.onset_ms >= limit:
                return self._decide(Verdict.BARGE_IN, now_ms)
        elif self.state == "ended":
            assert self.end_ms is not None
            if self.end_ms - self.onset_ms >= p.backchannel_max_ms:
                return self._decide(Verdict.BARGE_IN, now_ms)
            if backchannel and self.finals:
                return self._decide(Verdict.BACKCHANNEL, now_ms)
            if self.got_final and not words:  # the STT heard no words in it
                return self._decide(Verdict.NOISE, now_ms)
            if now_ms - self.end_ms >= p.transcript_wait_ms:
                return self._decide(Verdict.BACKCHANNEL if backchannel else Verdict.NOISE, now_ms)
        elif self.state == "interrupted" and self.early and not self.vad_seen:
            if now_ms - self.onset_ms >= p.early_false_ms:  # the early cue's sound never became speech
                return self._decide(Verdict.FALSE_INTERRUPTION, now_ms)
        elif self.state == "interrupted" and self.end_ms is not None:
            # Short speech with no real words after all: the interruption was false; resume.
            short = self.end_ms - self.onset_ms < p.backchannel_max_ms
            if short and now_ms - self.end_ms >= p.transcript_wait_ms and (not words or backchannel):
                return self._decide(Verdict.FALSE_INTERRUPTION, now_ms)
        return None

    def _takes_floor(self, words: str) -> bool:
        """`takes_floor`, where a caller's "Hello?" that met the start of the bot's turn is their opening
        (the turn, a greeting most often, answers it: it resumes instead of yielding)."""
        return takes_floor(words, self.params.backchannel_max_words, openers=self._opener(self.onset_ms))

    def _opener(self, onset_ms: float) -> bool:
        """Speech from `onset_ms` began before the bot's turn or within `opener_overlap_ms` of its start."""
        start = self.bot_start_ms
        return start is not None and onset_ms <= start + self.params.opener_overlap_ms

    def turn_taken(self) -> None:
        """The workflow made the caller's speech a user turn: the interruption is over."""
        self.state, self.end_ms, self.text, self.finals = "idle", None, "", []


class InterruptionProcessor(FrameProcessor):
    """Feeds VAD, transcripts and the player's state to the analyzer; pushes its decisions downstream.

    Sits after the STT and before the workflow. While a pause is being decided, transcripts are held
    back (a backchannel never becomes a user turn); a barge-in releases them to the workflow.
    """

    def __init__(self, analyzer: InterruptionAnalyzer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.analyzer = analyzer or InterruptionAnalyzer()
        self._samples = 0
        self._pcm = np.zeros(0, np.int16)
        self._held: list[Frame] = []

    @property
    def t_ms(self) -> float:
        return self._samples / SAMPLES_PER_MS

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        a = self.analyzer
        decision: Decision | None = None
        if isinstance(frame, BotPlaybackFrame):
            decision = a.set_bot_speaking(frame.speaking, self.t_ms)
        elif isinstance(frame, InputAudioRawFrame):
            self._samples += len(frame.audio) // 2
            await self.push_frame(frame, direction)
            # the cue looks at 20 ms frames, whatever size the transport's frames are (a replay's are larger)
            self._pcm = np.concatenate([self._pcm, np.frombuffer(frame.audio, dtype=np.int16)])
            n = len(self._pcm) // CUE_FRAME * CUE_FRAME
            t0 = (self._samples - len(self._pcm)) / SAMPLES_PER_MS
            for i in range(0, n, CUE_FRAME):
                decision = a.audio(self._pcm[i : i + CUE_FRAME], t0 + i / SAMPLES_PER_MS)
                if decision:
                    await self._act(decision)
            self._pcm = self._pcm[n:]
            decision = a.tick(self.t_ms)
            if decision:
                await self._act(decision)
            return
        elif isinstance(frame, CallerSpeechTentativeFrame):
            decision = a.caller_tentative(frame.t_ms, self.t_ms)
        elif isinstance(frame, CallerSpeechRevokedFrame):
            decision = a.caller_revoked(self.t_ms)
        elif isinstance(frame, SpeechStartedFrame):
            decision = a.speech_start(frame.t_ms, self.t_ms)
        elif isinstance(frame, SpeechEndedFrame):
            decision = a.speech_end(frame.t_ms, self.t_ms)
        elif isinstance(frame, TranscriptionFrame | InterimTranscriptionFrame) and a.state != "idle":
            decision = a.transcript(frame.text, isinstance(frame, TranscriptionFrame), self.t_ms)
            if a.active or (decision and decision.verdict is not Verdict.BARGE_IN):
                if isinstance(frame, TranscriptionFrame):
                    self._held.append(frame)
                if decision:
                    await self._act(decision)
                return
            if decision:  # these words make it a barge-in: the caller's turn opens before its words arrive
                await self._act(decision)
                await self.push_frame(frame, direction)
                return
        await self.push_frame(frame, direction)
        if decision:
            await self._act(decision)

    async def _act(self, d: Decision) -> None:
        if d.verdict is Verdict.PAUSE:
            await self.push_frame(BotPauseFrame(t_ms=d.t_ms, onset_ms=d.onset_ms))
        elif d.verdict is Verdict.BARGE_IN:
            await self.push_frame(BargeInFrame(
                t_ms=d.t_ms, onset_ms=d.onset_ms, text=d.text, early=self.analyzer.early, speech_end_ms=d.speech_end_ms
            ))
            held, self._held = self._held, []
            for f in held:  # the interrupting words belong to the caller's turn
                await self.push_frame(f)
        else:
            self._held.clear()  # a backchannel or noise never becomes a user turn
            await self.push_frame(
                BotResumeFrame(t_ms=d.t_ms, onset_ms=d.onset_ms, reason=d.verdict.value, text=d.text)
            )
