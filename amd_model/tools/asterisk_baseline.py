"""A faithful re-implementation of Asterisk's app_amd (the AMD() dialplan app), for a fair baseline.

Follows `isAnsweringMachine()` in apps/app_amd.c of current Asterisk (modern code: default
maximum_number_of_words = 2 tested with `iWordsCount > maximumNumberOfWords`, i.e. a third word ->
MACHINE; the initial state is STATE_IN_WORD), with the amd.conf defaults. The silence test is the
one app_amd gets from its DSP (`ast_dsp_silence` -> `__ast_dsp_silence_noise` in main/dsp.c): a
frame is silent when the integer mean of |sample| is below `silence_threshold` (256), and the DSP
reports the length of the current run of silent frames (`totalsilence`, reset by any voiced frame).
We process 20 ms frames (160 samples at 8 kHz), as Asterisk receives them from a SIP/Twilio leg.

Not modelled: HANGUP (the file ending early: callers pad with quiet line noise instead, as a live
call keeps streaming), CNG frames, and the wall-clock watchdog (`ast_tvnow() - start >
totalAnalysisTime`), which only matters when frames stall.

Verdicts: HUMAN -> human, MACHINE -> machine, NOTSURE -> unknown; `t_ms` is Asterisk's iTotalTime
when it decided (the audio time at the end of the deciding frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callgate.audio import SAMPLE_RATE

FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
STATE_IN_WORD = 1
STATE_IN_SILENCE = 2
LABELS = {"HUMAN": "human", "MACHINE": "machine", "NOTSURE": "unknown"}


@dataclass(frozen=True)
class AsteriskAmdConfig:
    """amd.conf [general] keys, with Asterisk's defaults (ms, except the two counts/levels)."""

    initial_silence: int = 2500
    greeting: int = 1500
    after_greeting_silence: int = 800
    total_analysis_time: int = 5000
    min_word_length: int = 100
    between_words_silence: int = 50
    maximum_number_of_words: int = 2
    silence_threshold: int = 256
    maximum_word_length: int = 5000


@dataclass(frozen=True)
class AsteriskResult:
    """AMDSTATUS / AMDCAUSE and the audio time of the decision."""

    status: str  # HUMAN | MACHINE | NOTSURE
    cause: str  # e.g. "HUMAN-800-800", "LONGGREETING-1500-1500", "MAXWORDS-3-2", "TOOLONG-5000"
    t_ms: int

    @property
    def label(self) -> str:
        return LABELS[self.status]


class AsteriskAmd:
    """app_amd's state machine. Feed int16 8 kHz PCM in any chunking; `result` is set once decided."""

    def __init__(self, config: AsteriskAmdConfig | None = None) -> None:
        self.cfg = config or AsteriskAmdConfig()
        self._pending = np.zeros(0, dtype=np.int16)
        self.result: AsteriskResult | None = None
        # app_amd's locals
        self.in_initial_silence = True
        self.in_greeting = False
        self.voice_duration = 0
        self.silence_duration = 0
        self.total_time = 0
        self.words = 0
        self.state = STATE_IN_WORD
        self.consecutive_voice = 0
        # the DSP's run of silence (dsp->totalsilence)
        self._dsp_total_silence = 0

    def feed(self, pcm: np.ndarray) -> AsteriskResult | None:
        """Process whole 20 ms frames of `pcm` (a remainder waits for the next call)."""
        if self.result is not None:
            return self.result
        pcm = np.asarray(pcm, dtype=np.int16)
        buf = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n = buf.size // FRAME_SAMPLES
        if n:
            frames = buf[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES).astype(np.int32)
            # C: accum = sum(abs(s)); accum /= len  (integer division of a non-negative int)
            levels = np.abs(frames).sum(axis=1) // FRAME_SAMPLES
            for level in levels.tolist():
                if self._frame(int(level)):
                    break
        self._pending = buf[n * FRAME_SAMPLES :].copy()
        return self.result

    def _decide(self, status: str, cause: str) -> bool:
        self.result = AsteriskResult(status, cause, self.total_time)
        return True

    def _frame(self, level: int) -> bool:
        """One 20 ms voice frame; True when a verdict was reached (the C loop's `break`)."""
        c = self.cfg
        framelength = FRAME_MS
        self.total_time += framelength
        if self.total_time >= c.total_analysis_time:
            return self._decide("NOTSURE", f"TOOLONG-{self.total_time}")

        # ast_dsp_silence(): silent frames extend the run, a voiced frame resets it
        if level < c.silence_threshold:
            self._dsp_total_silence += framelength
            dspsilence = self._dsp_total_silence
        else:
            self._dsp_total_silence = 0
            dspsilence = 0

        if dspsilence > 0:
            self.silence_duration = dspsilence
            if self.silence_duration >= c.between_words_silence:
                self.state = STATE_IN_SILENCE
                self.consecutive_voice = 0
            if self.in_initial_silence and self.silence_duration >= c.initial_silence:
                return self._decide("MACHINE", f"INITIALSILENCE-{self.silence_duration}-{c.initial_silence}")
            if self.silence_duration >= c.after_greeting_silence and self.in_greeting:
                return self._decide("HUMAN", f"HUMAN-{self.silence_duration}-{c.after_greeting_silence}")
        else:
            self.consecutive_voice += framelength
            self.voice_duration += framelength
            if self.consecutive_voice >= c.min_word_length and self.state == STATE_IN_SILENCE:
                self.words += 1
                self.state = STATE_IN_WORD
            if self.consecutive_voice >= c.maximum_word_length:
                return self._decide("MACHINE", f"MAXWORDLENGTH-{self.consecutive_voice}")
            if self.words > c.maximum_number_of_words:
                return self._decide("MACHINE", f"MAXWORDS-{self.words}-{c.maximum_number_of_words}")
            if self.in_greeting and self.voice_duration >= c.greeting:
                return self._decide("MACHINE", f"LONGGREETING-{self.voice_duration}-{c.greeting}")
            if self.voice_duration >= c.min_word_length:
                self.silence_duration = 0
            if self.consecutive_voice >= c.min_word_length and not self.in_greeting:
                self.in_initial_silence = False
                self.in_greeting = True
        return False


def quiet_line(n_samples: int, seed: int = 0, level: float = 3.0) -> np.ndarray:
    """Low-level line noise (|x| ~ 2-3, far below any silence threshold) to pad a file's end."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.standard_normal(n_samples) * level), -32768, 32767).astype(np.int16)


def run_asterisk_amd(
    pcm: np.ndarray, config: AsteriskAmdConfig | None = None, *, pad: bool = True
) -> AsteriskResult:
    """Run app_amd over a whole call. With `pad`, a file that ends before a verdict is continued with
    quiet line noise (a live call keeps streaming); without it, an undecided file gives NOTSURE."""
    amd = AsteriskAmd(config)
    result = amd.feed(pcm)
    if result is None and pad:
        need = (amd.cfg.total_analysis_time + FRAME_MS) * SAMPLE_RATE // 1000
        result = amd.feed(quiet_line(need))
    if result is None:
        result = AsteriskResult("NOTSURE", f"TOOLONG-{amd.total_time}", amd.total_time)
    return result


# Twilio's AMD as its documented parameters describe it, run on app_amd's state machine: speech longer
# than MachineDetectionSpeechThreshold (2400 ms) -> machine; speech followed by
# MachineDetectionSpeechEndThreshold (1200 ms) of silence -> human; MachineDetectionSilenceTimeout
# (5000 ms) of initial silence -> unknown; MachineDetectionTimeout (30 s). Twilio counts no words, so the
# word rules are off. An approximation of an unpublished algorithm, for latency comparisons only.
TWILIO_DEFAULTS = AsteriskAmdConfig(
    initial_silence=5000,
    greeting=2400,
    after_greeting_silence=1200,
    total_analysis_time=30000,
    maximum_number_of_words=10**6,
    maximum_word_length=30000,
)


def twilio_answered_by(result: AsteriskResult) -> str:
    """The AnsweredBy the Twilio-like rules give (Enable mode): initial silence is `unknown`, not machine."""
    if result.cause.startswith("INITIALSILENCE"):
        return "unknown"
    return {"HUMAN": "human", "MACHINE": "machine_start"}.get(result.status, "unknown")
