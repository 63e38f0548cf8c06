"""Background-speech gate: is the speech the VAD hears the caller's, or a TV / a colleague / a café behind them?

The VAD says *someone* speaks; it cannot say *who*. Background speech reaches a phone's microphone
from across a room, so it is quieter than the caller (seed 001; Retell and Krisp's BVC rely on the
same prior). The gate learns, per call, how loud the caller is and rejects speech well below that;
level relative to the caller's learned level was the best cue measured (AUC 0.885 per window; spectral
cues depend on the room and stay off, speaker embeddings need more audio than a turn start gives).
turn_eval/RESULTS.md keeps every measurement behind these rules and the cues that were not kept.

How it decides (`GateParams` holds every number; pipelines/presets/listen.json tunes them):

* Caller level = 85th percentile of the caller's own window levels over the last 30 s (a static
  fallback until `min_learn_windows` were heard); only windows within `learn_offset_db` of it teach it,
  so background that got through once cannot drag it down.
* A VAD segment opens the gate when the 3-window peak reaches caller level - `open_offset_db` (never
  below the noise floor + `floor_margin_db`); the start is dated back to the VAD's onset, so nothing is
  clipped. For `grace_ms` after the caller's last word the threshold drops by `grace_db`. Once open,
  windows down to `hold_offset_db` under the caller level keep it open; `close_ms` without one closes it.
* Media mode: more than `media_on_frac` of the last 10 s rejected -> the threshold rises `media_extra_db`.
* Background level: rejected speech is learned the same way; once known, the threshold moves to
  `bg_mid_frac` of the way from it to the caller level (within `min_open_offset_db` /
  `max_open_offset_db` of the caller), so a TV 7 dB under is held off and one 25 dB under costs nothing.
* Pitch (`pitch_weight`): background is usually another person. A segment's median pitch against the
  caller's learned pitch moves its score by up to `pitch_clip_db`; rejected or revoked speech at the
  caller's own pitch (`bg_learn_min_st`) never teaches the background level.
* Two stages (`confirm_ms` > 0, the `agent` preset): a window within `tentative_db` of the threshold
  (`tentative_quiet_db` more while no background level is known) opens *tentatively* at once
  (`caller_tentative`: the bot pauses, no turn starts); `confirm_windows` windows at threshold +
  `confirm_extra_db` (+ `confirm_quiet_db` on a line still without background, for `confirm_quiet_ms`)
  within `confirm_ms` confirm it (`caller_start`, dated back), else it is revoked (`caller_revoked`, the
  bot resumes; its windows teach the background level if `learn_revoked`). One loud TV syllable only
  pauses the bot; a soft first syllable is reacted to at once.
* Bridge (`bridge_ms`): an opening still pending when its VAD segment ends stays pending that long; a VAD
  start meanwhile continues it with a fresh `confirm_ms` (a soft first word, a pause, then the rest).
* Re-arm (`rearm_ms`): an opening that reaches its time limit within that long of a confirming window
  goes on from that window (a caller who starts while the bot is paused on a TV is not talked over).
* VAD speech the gate did not open on is reported as a background span (start, end).

`GateAnalyzer` is plain numpy (per 32 ms window ~20 µs, ~0.1 ms with the pitch cue on every window:
scripts/bench_listen.py); `BackgroundSpeechGate` is the thin FrameProcessor placed after the VAD
(processors.speech.SpeechDetector).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.frames import (
    BackgroundSpeechFrame,
    CallerSpeechEndedFrame,
    CallerSpeechRevokedFrame,
    CallerSpeechStartedFrame,
    CallerSpeechTentativeFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
)

WIN = 256  # samples: Silero's 32 ms window at 8 kHz
WIN_MS = WIN * 1000 / SAMPLE_RATE


@dataclass
class GateParams:
    """The gate's numbers (dB are dBFS of a 32 ms window's RMS)."""

    fallback_dbfs: float = -35.0  # open threshold before the caller's level is learned
    window_s: float = 30.0  # rolling window of caller levels
    percentile: float = 85.0  # caller level = this percentile of those levels
    min_learn_windows: int = 20  # caller windows needed before the learned level replaces the fallback
    open_offset_db: float = 5.0  # open when the 3-window peak >= caller level - this
    hold_offset_db: float = 12.0  # once open, windows >= caller level - this count as the caller
    close_ms: float = 250.0  # no caller-level window for this long closes the gate
    grace_ms: float = 500.0  # after the caller's last word, the open threshold is lowered ...
    grace_db: float = 4.0  # ... by this much
    floor_margin_db: float = 12.0  # never open below the noise floor + this
    media_on_frac: float = 0.25  # rejected speech over the last 10 s above this -> media mode
    media_extra_db: float = 2.0  # media mode raises the open threshold by this
    lookback_ms: float = 600.0  # a rejected lead-in this short before the gate opens is the caller's
    tilt_weight: float = 0.0  # dB of score per dB of high-band tilt relative to the caller's (0 = off)
    tilt_clip_db: float = 6.0  # the tilt term is clipped to +- this many dB of score
    # Background level memory: the level of the speech the gate rejected (85th percentile over the
    # last 30 s) is learned like the caller's; when it is known, the open threshold rises to this
    # fraction of the way from the background level to the caller level (0 = off) ...
    bg_mid_frac: float = 0.0
    min_open_offset_db: float = 1.0  # ... but never above the caller level - this
    # ... and where the learned background lies far below the caller, that midpoint may also lower the
    # threshold, down to caller level - this (0 or <= open_offset_db = never below caller level - open_offset_db)
    max_open_offset_db: float = 0.0
    # A VAD segment rejected for this long is background until a window beats the open threshold by
    # this much more (the caller talking over the TV is louder than the TV, not just louder than usual).
    midseg_after_ms: float = 250.0
    midseg_extra_db: float = 0.0
    # Only windows at least this close to the caller level teach it (background that got through, or
    # a soft tail, must not drag the caller level down and let more background in). 0 = every held window.
    learn_offset_db: float = 0.0
    quiet_open_db: float = 0.0  # while no background speech level is known, the open threshold is this much lower
    # Pitch cue: dB of score per semitone that the segment's median pitch lies from the caller's learned
    # pitch (0 = off); the term is clipped to +- pitch_clip_db and used only once the caller's pitch is known.
    pitch_weight: float = 0.0
    pitch_clip_db: float = 6.0
    pitch_free_st: float = 2.0  # this close to the caller's pitch costs nothing
    # Rejected speech whose pitch lies within this many semitones of the caller's (or is not known yet) is
    # probably the caller's own soft speech: it does not teach the background level (0 = every rejected
    # window teaches it; before the caller's pitch is known, every one does).
    bg_learn_min_st: float = 0.0
    # Two-stage opening (confirm_ms > 0): a window within `tentative_db` of the open threshold opens the
    # gate *tentatively* at once (the bot pauses; nothing is cancelled, no user turn starts); the opening
    # is confirmed when `confirm_windows` single windows since then reach the open threshold +
    # `confirm_extra_db`, and revoked (background) when `confirm_ms` pass, or the VAD segment ends, first.
    # A TV's one loud syllable then pauses the bot for a moment instead of starting a turn, and a soft
    # first syllable still reacts at once. 0 = one stage: the open threshold opens and confirms.
    confirm_ms: float = 0.0
    tentative_db: float = 0.0
    confirm_windows: int = 1
    confirm_extra_db: float = 0.0
    confirm_quiet_db: float = 0.0  # while no background level is known, confirming needs this much more ...
    confirm_quiet_ms: float = 0.0  # ... for this long into the call (0 = all call): a line still quiet by then has none
    tentative_quiet_db: float = 0.0  # ... and a tentative opening this much less (the bot pauses on any likely start)
    # A revoked tentative opening teaches the background level with its windows (True), or not: they lay
    # near the threshold, and on a line with no background they are the caller's own soft words, which
    # then raise the threshold over the rest of the turn (`bg_learn_min_st` also guards them: a revoked
    # stretch at the caller's own pitch never teaches).
    learn_revoked: bool = True
    # A tentative opening still pending when its VAD segment ends is kept this long (the bot stays paused):
    # if the VAD starts again meanwhile, the same opening goes on (a caller's short soft first word, a
    # pause, then the rest: revoking at the word's end resumed the bot over them). 0 = revoke at the end.
    bridge_ms: float = 0.0
    # An opening that reaches its time limit within this long of a confirming window goes on from that
    # window with a fresh `confirm_ms` (a caller who starts loud while the bot is paused on a TV: revoking
    # on the TV's clock resumed the bot over their first words). 0 = always revoke at `confirm_ms`.
    rearm_ms: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateParams:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown gate parameter(s): {', '.join(sorted(unknown))}")
        ints, bools = ("min_learn_windows", "confirm_windows"), ("learn_revoked",)
        return cls(**{k: int(v) if k in ints else bool(v) if k in bools else float(v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateEvent:
    kind: Literal[
        "caller_tentative", "caller_revoked", "caller_start", "caller_end", "background_start", "background_end"
    ]
    t_ms: float


def window_level_db(x: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (full-scale square wave = 0 dB)."""
    xf = x.astype(np.float32)
    return float(10.0 * np.log10(float(np.dot(xf, xf)) / (len(xf) * 32768.0**2) + 1e-10))


_PITCH_NFFT = 512
_PITCH_LAGS = (20, 100)  # 400 Hz .. 80 Hz at 8 kHz
_PITCH_NORM = WIN / (WIN - np.arange(_PITCH_LAGS[1] + 1, dtype=np.float32))  # unbiased autocorrelation


def window_pitch_hz(x: np.ndarray, voicing: float = 0.45) -> float:
    """Pitch of one window from its normalised autocorrelation (nan when not clearly voiced)."""
    xf = x.astype(np.float32)
    xf = xf - xf.mean()
    spec = np.fft.rfft(xf, _PITCH_NFFT)
    r = np.fft.irfft(spec.real**2 + spec.imag**2, _PITCH_NFFT)[: _PITCH_LAGS[1] + 1] * _PITCH_NORM
    if r[0] <= 0:
        return float("nan")
    lo, hi = _PITCH_LAGS
    lag = lo + int(np.argmax(r[lo : hi + 1]))
    if r[lag] < voicing * r[0]:
        return float("nan")
    for div in (3, 2):  # a strong peak at a half or a third of the lag is the true period (octave errors)
        c = round(lag / div)
        if c - 1 >= lo:
            k = c - 1 + int(np.argmax(r[c - 1 : c + 2]))
            if r[k] >= 0.85 * r[lag]:
                return SAMPLE_RATE / k
    return SAMPLE_RATE / lag


def window_tilt_db(x: np.ndarray) -> float:
    """High-band tilt: energy after a first difference (pre-emphasis) relative to the raw energy, dB."""
    xf = x.astype(np.float32)
    d = xf[1:] - 0.95 * xf[:-1]
    return float(10.0 * np.log10((float(np.dot(d, d)) + 1.0) / (float(np.dot(xf, xf)) + 1.0)))


class GateAnalyzer:
    """Per 32 ms window: caller, background or neither. Numpy in, events out, no asyncio.

    Feed every window with `process_window`, and the VAD's segment edges with `vad_start(onset_ms)` /
    `vad_end(end_ms)` as they become known (a VAD dates its start back, so the gate keeps the last
    second of window levels and re-reads them from the onset).
    """

    def __init__(self, params: GateParams | None = None) -> None:
        self.p = params or GateParams()
        self._t_ms = 0.0  # end of the last window processed
        self._hist: deque[tuple[float, float, float, float]] = deque(maxlen=32)  # (t0, level, tilt, pitch)
        self._caller_pitches: deque[float] = deque(maxlen=256)  # log2 Hz of the caller's voiced windows
        self._pitch_base: float | None = None
        self.want_cues = bool(self.p.tilt_weight or self.p.pitch_weight or self.p.bg_learn_min_st)  # compute tilt and pitch per window
        self._caller_levels: deque[tuple[float, float]] = deque()
        self._caller_tilts: deque[float] = deque(maxlen=256)
        self._bg_levels: deque[tuple[float, float]] = deque()  # (t, level) of rejected speech windows
        self._bg_level: float | None = None
        self._n_bg = 0
        self._n_learned = 0
        self._baseline: float | None = None
        self._tilt_base = 0.0
        self._floor_levels: deque[float] = deque(maxlen=int(10_000 / WIN_MS))
        self._floor = -90.0
        self._rejected: deque[bool] = deque(maxlen=int(10_000 / WIN_MS))
        self._n_rejected = 0
        self.media_mode = False
        self._vad_active = False
        self._vad_onset = 0.0
        self.caller_open = False
        self._caller_start = 0.0
        self._last_caller_ms = -1e9
        self._bg_start: float | None = None
        self._windows = 0
        self.last_window_caller = False  # was the last window processed caller speech?
        self._flags: dict[int, bool] = {}  # window index -> caller speech (the last ~2 s)
        # two-stage opening: the claimed start of a tentative opening, when it came, its confirming
        # windows so far, and its windows (t0, level, tilt) to learn once it is settled
        self._tentative: float | None = None
        self._tent_t1 = 0.0
        self._tent_hits = 0
        self._tent_last_hit = -1e9  # end of its last confirming window
        self._tent_windows: list[tuple[float, float, float, float]] = []  # (t0, level, tilt, pitch Hz or nan)
        self._bridge_end: float | None = None  # the pending tentative opening outlived its VAD segment, ended here

    # --- state for the interruption handler and the endpointer -----------------------------------

    @property
    def baseline_db(self) -> float | None:
        """The caller's learned level (None until learned: the static fallback is in force)."""
        return self._baseline

    @property
    def floor_db(self) -> float:
        return self._floor

    @property
    def last_caller_ms(self) -> float:
        """End of the caller's last caller-level window (audio time)."""
        return self._last_caller_ms

    def open_threshold_db(self, t_ms: float | None = None) -> float:
        """The window peak that opens the gate now (caller level - offset, fallback, grace, media)."""
        t = self._t_ms if t_ms is None else t_ms
        if self._baseline is None:
            thr = self.p.fallback_dbfs
        else:
            thr = self._baseline - self.p.open_offset_db
        if self.media_mode:
            thr += self.p.media_extra_db
        if self.p.bg_mid_frac and self._baseline is not None and self._bg_level is not None:
            mid = self._bg_level + self.p.bg_mid_frac * (self._baseline - self._bg_level)
            lowest = thr - max(0.0, self.p.max_open_offset_db - self.p.open_offset_db)
            thr = max(lowest, min(mid, self._baseline - self.p.min_open_offset_db))
        elif self._baseline is not None and self._bg_level is None:
            thr -= self.p.quiet_open_db
        if t - self._last_caller_ms <= self.p.grace_ms:
            thr -= self.p.grace_db
        return max(thr, self._floor + self.p.floor_margin_db)

    @property
    def background_db(self) -> float | None:
        """The learned level of rejected (background) speech, None until enough was heard."""
        return self._bg_level

    @property
    def tentative_open(self) -> bool:
        """Is a tentative opening waiting to be confirmed or revoked (the caller may have started)?"""
        return self._tentative is not None

    @property
    def tentative_heard(self) -> bool:
        """Is a tentative opening pending with its speech still heard? (Not in a bridged pause: there the
        bot stays paused, but the endpointer may end the turn as if the opening had been revoked.)"""
        return self._tentative is not None and self._bridge_end is None

    def is_caller_speech(self, t_ms: float | None = None, now_ms: float | None = None) -> bool:
        """Is the caller speaking (at t_ms, within the last second; default: now)? `now_ms` is accepted for
        the interruption handler's hook signature and not needed: the gate keeps its own audio clock."""
        if t_ms is None or t_ms >= self._t_ms - WIN_MS:
            return self.caller_open
        return self._caller_start <= t_ms <= self._last_caller_ms + self.p.close_ms

    def window_is_caller(self, t0_ms: float) -> bool:
        """Was the window starting at t0_ms (audio time) the caller's speech? (False if unknown.)"""
        return self._flags.get(round(t0_ms / WIN_MS), False)

    def _flag(self, t0: float, caller: bool) -> None:
        self.last_window_caller = caller
        idx = round(t0 / WIN_MS)
        self._flags[idx] = caller
        if idx % 64 == 0:
            for k in [k for k in self._flags if k < idx - 64]:
                del self._flags[k]

    def state(self) -> dict[str, Any]:
        return {
            "caller_open": self.caller_open,
            "baseline_db": None if self._baseline is None else round(self._baseline, 1),
            "open_threshold_db": round(self.open_threshold_db(), 1),
            "floor_db": round(self._floor, 1),
            "media_mode": self.media_mode,
            "background_db": None if self._bg_level is None else round(self._bg_level, 1),
        }

    # --- feeding ---------------------------------------------------------------------------------

    def vad_start(self, onset_ms: float) -> list[GateEvent]:
        """The VAD reports speech from onset_ms: re-read the buffered windows since then."""
        self._vad_active, self._vad_onset = True, onset_ms
        if self._bridge_end is not None:  # a bridged tentative opening goes on: this segment has to confirm it
            self._bridge_end, self._tent_t1, self._tent_hits = None, onset_ms, 0
        events: list[GateEvent] = []
        recent = [h for h in self._hist if h[0] >= onset_ms - 1e-6]
        for i, (t0, level, _tilt, _pitch) in enumerate(recent):
            peak = max(h[1] for h in recent[max(0, i - 2) : i + 1])
            events += self._decide(t0, level, peak, self._segment_tilt(t0))
        return events

    def _segment_tilt(self, t0: float) -> float:
        """Energy-weighted tilt of this VAD segment's windows up to t0 (the last six at most)."""
        if not self.p.tilt_weight:
            return 0.0
        ws = [h for h in self._hist if self._vad_onset - 1e-6 <= h[0] <= t0 + 1e-6][-6:]
        if not ws:
            return 0.0
        e = [10 ** (h[1] / 10) for h in ws]
        return sum(w * h[2] for w, h in zip(e, ws, strict=True)) / (sum(e) + 1e-20)

    def vad_end(self, end_ms: float) -> list[GateEvent]:
        """The VAD reports the speech ended at end_ms (end of its last voiced window)."""
        self._vad_active = False
        events: list[GateEvent] = []
        if self._tentative is not None and self.p.bridge_ms > 0:
            self._bridge_end = end_ms  # settled by the next VAD start, or revoked `bridge_ms` from here
            return events
        if self._tentative is not None:
            events += self._revoke(end_ms)
        if self.caller_open:
            self.caller_open = False
            events.append(GateEvent("caller_end", min(self._last_caller_ms, end_ms)))
        return events + self._close_background(end_ms)

    def _close_background(self, end_ms: float) -> list[GateEvent]:
        """The rejected speech of the VAD segment that ended at end_ms, as a background span."""
        events: list[GateEvent] = []
        if self._bg_start is not None:
            if end_ms - self._bg_start >= 2 * WIN_MS:
                events += [GateEvent("background_start", self._bg_start), GateEvent("background_end", end_ms)]
            self._bg_start = None
        return events

    def process_window(self, x: np.ndarray) -> list[GateEvent]:
        """One 256-sample int16 window (in order). Returns the events it caused."""
        t0 = self._t_ms
        self._t_ms += WIN_MS
        self._windows += 1
        level = window_level_db(x)
        tilt = window_tilt_db(x) if self.want_cues else 0.0
        loud = level >= self._floor + self.p.floor_margin_db - self.p.grace_db
        pitch = window_pitch_hz(x) if self.want_cues and loud else float("nan")
        self._hist.append((t0, level, tilt, pitch))
        self._floor_levels.append(level)
        if self._windows % 16 == 0:
            self._floor = float(np.percentile(self._floor_levels, 10))
            self._forget(t0)
        self._flag(t0, False)
        if not self._vad_active:
            self._note_rejected(False)
            if self._bridge_end is not None and self._t_ms - self._bridge_end >= self.p.bridge_ms:
                end, self._bridge_end = self._bridge_end, None
                return self._revoke(self._t_ms) + self._close_background(end)
            if self.caller_open and self._t_ms - self._last_caller_ms >= self.p.close_ms:
                self.caller_open = False
                return [GateEvent("caller_end", self._last_caller_ms)]
            return []
        peak = max(h[1] for h in list(self._hist)[-3:])
        return self._decide(t0, level, peak, self._segment_tilt(t0) if not self.caller_open else tilt)

    def cue_values(self, t0: float) -> dict[str, float]:
        """The VAD segment's tilt (dB) and median pitch distance (semitones) from the caller's learned
        ones, over its windows up to t0 (the last six at most); nan where not known yet."""
        ws = [h for h in self._hist if self._vad_onset - 1e-6 <= h[0] <= t0 + 1e-6][-6:]
        tilt_rel = pitch_st = float("nan")
        if ws and self._n_learned >= self.p.min_learn_windows:
            e = [10 ** (h[1] / 10) for h in ws]
            tilt = sum(w * h[2] for w, h in zip(e, ws, strict=True)) / (sum(e) + 1e-20)
            tilt_rel = tilt - self._tilt_base
        voiced = [h[3] for h in ws if h[3] == h[3]]
        if voiced and self._pitch_base is not None:
            pitch_st = abs(12.0 * (float(np.log2(np.median(voiced))) - self._pitch_base))
        return {"tilt_rel": tilt_rel, "pitch_dist_st": pitch_st}

    def _score(self, peak: float, tilt: float, t0: float) -> float:
        if self.p.tilt_weight and self._n_learned >= self.p.min_learn_windows:
            c = self.p.tilt_clip_db
            peak += max(-c, min(c, self.p.tilt_weight * (tilt - self._tilt_base)))
        if self.p.pitch_weight and self._pitch_base is not None:
            d = self.cue_values(t0)["pitch_dist_st"]
            if d == d:
                c = self.p.pitch_clip_db
                peak -= max(-c, min(c, self.p.pitch_weight * (d - self.p.pitch_free_st)))
        return peak

    def _decide(self, t0: float, level: float, peak: float, tilt: float) -> list[GateEvent]:
        t1 = t0 + WIN_MS
        events: list[GateEvent] = []
        self._flag(t0, False)
        if not self.caller_open:
            need = self.open_threshold_db(t0)
            if self._bg_start is not None and t0 - self._bg_start >= self.p.midseg_after_ms:
                need += self.p.midseg_extra_db
            if self.p.confirm_ms > 0:
                return self._decide_two_stage(t0, level, peak, tilt, need)
            if self._score(peak, tilt, t0) >= need:
                start = self._claim_start(t0)
                events += self._settle_lead_in(start)
                self._open(start, t1)
                events.append(GateEvent("caller_start", start))
                self._learn(level, tilt, t1)
                self._flag(t0, True)
            else:
                self._reject(t0, level)
            return events
        if level >= self._hold_db():
            self._last_caller_ms = t1
            self._learn(level, tilt, t1)
            self._flag(t0, True)
        elif t1 - self._last_caller_ms >= self.p.close_ms:
            self.caller_open = False
            events.append(GateEvent("caller_end", self._last_caller_ms))
            self._bg_start = t1
        self._note_rejected(False)
        return events

    def _reject(self, t0: float, level: float) -> None:
        """A closed-gate window not taken for the caller: background from here (if not already), and its
        level teaches the background level."""
        if self._bg_start is None:
            self._bg_start = max(self._vad_onset, t0)
        self._note_rejected(True)
        self._learn_background(level, t0 + WIN_MS)

    def _claim_start(self, t0: float) -> float:
        """Where caller speech that opens the gate at window t0 began: the VAD onset, also over a short
        rejected lead-in (a soft first word); after a long stretch of background, the last two windows."""
        if self._bg_start is None or t0 - self._bg_start <= self.p.lookback_ms:
            return self._vad_onset if self._bg_start is None else self._bg_start
        return t0 - 2 * WIN_MS

    def _settle_lead_in(self, start: float) -> list[GateEvent]:
        """The rejected stretch before a caller start is a background span (unless it is just the soft
        onset of this speech)."""
        events: list[GateEvent] = []
        if self._bg_start is not None:
            if start - self._bg_start >= 5 * WIN_MS:
                events += [GateEvent("background_start", self._bg_start), GateEvent("background_end", start)]
            self._bg_start = None
        return events

    def _open(self, start: float, t1: float) -> None:
        self.caller_open = True
        self._caller_start = start
        self._last_caller_ms = t1

    def _decide_two_stage(self, t0: float, level: float, peak: float, tilt: float, need: float) -> list[GateEvent]:
        """Closed gate, two-stage opening: open tentatively, then confirm (level + cues) or revoke. The cues
        may only bring a tentative opening sooner: over a segment's first windows the pitch is a guess, and
        a guess against the caller there would delay a soft first syllable while the bot talks on."""
        t1 = t0 + WIN_MS
        events: list[GateEvent] = []
        if self._tentative is None:
            quiet = self.p.tentative_quiet_db if self._bg_level is None else 0.0
            if max(peak, self._score(peak, tilt, t0)) < need - self.p.tentative_db - quiet:
                self._reject(t0, level)
                return events
            start = self._claim_start(t0)
            self._tentative, self._tent_t1, self._tent_hits, self._tent_windows = start, t1, 0, []
            events.append(GateEvent("caller_tentative", start))
        self._tent_windows.append((t0, level, tilt, self._hist[-1][3]))
        self._note_rejected(False)
        quiet_line = self._bg_level is None and (not self.p.confirm_quiet_ms or t0 < self.p.confirm_quiet_ms)
        extra = self.p.confirm_extra_db + (self.p.confirm_quiet_db if quiet_line else 0.0)
        if self._score(level, tilt, t0) >= need + extra:  # this window's level (+ pitch cue)
            self._tent_hits += 1
            self._tent_last_hit = t1
        if self._tent_hits >= self.p.confirm_windows:
            start, self._tentative = self._tentative, None
            events += self._settle_lead_in(start)
            self._open(start, t1)
            events.append(GateEvent("caller_start", start))
            hold = self._hold_db()
            for w0, lv, tl, _pitch in self._tent_windows:
                if lv >= hold:
                    self._learn(lv, tl, w0 + WIN_MS)
                    self._flag(w0, True)
            self._tent_windows = []
        elif t1 - self._tent_t1 >= self.p.confirm_ms:
            if self.p.rearm_ms and t1 - self._tent_last_hit <= self.p.rearm_ms and self._tent_t1 < self._tent_last_hit - WIN_MS:
                # the caller may just have begun: go on from that window (the stretch before is background)
                if self._bg_start is None:
                    self._bg_start = self._tentative
                self._tent_t1 = self._tent_last_hit - WIN_MS
                self._tentative = max(self._tentative, self._tent_last_hit - 3 * WIN_MS)
                self._tent_windows = [w for w in self._tent_windows if w[0] >= self._tentative - 1e-6]
            else:
                events += self._revoke(t1)
        return events

    def _revoke(self, t_ms: float) -> list[GateEvent]:
        """A tentative opening that was not confirmed: it was background from its claimed start."""
        start, self._tentative = self._tentative, None
        assert start is not None
        if self._bg_start is None:
            self._bg_start = start
        if self.p.learn_revoked and not self._near_caller_pitch([w[3] for w in self._tent_windows if w[3] == w[3]]):
            for w0, lv, _tl, _pitch in self._tent_windows:
                self._learn_background(lv, w0 + WIN_MS, pitch_checked=True)
        self._tent_windows = []
        return [GateEvent("caller_revoked", t_ms)]

    def _hold_db(self) -> float:
        """Once open, a window this loud is still the caller's (caller level - hold offset, above the floor)."""
        base = self._baseline if self._baseline is not None else self.p.fallback_dbfs
        return max(base - self.p.hold_offset_db, self._floor + self.p.floor_margin_db - self.p.grace_db)

    def _forget(self, t_ms: float) -> None:
        """Drop caller levels older than the rolling window; none left -> back to the static fallback."""
        while self._caller_levels and self._caller_levels[0][0] < t_ms - self.p.window_s * 1000:
            self._caller_levels.popleft()
        if self._baseline is not None and not self._caller_levels:
            self._baseline, self._n_learned = None, 0
        while self._bg_levels and self._bg_levels[0][0] < t_ms - self.p.window_s * 1000:
            self._bg_levels.popleft()
        if len(self._bg_levels) < self.p.min_learn_windows:
            self._bg_level = None

    def _learn(self, level: float, tilt: float, t_ms: float) -> None:
        if self.p.learn_offset_db and self._baseline is not None and level < self._baseline - self.p.learn_offset_db:
            return
        self._caller_levels.append((t_ms, level))
        while self._caller_levels and self._caller_levels[0][0] < t_ms - self.p.window_s * 1000:
            self._caller_levels.popleft()
        self._n_learned += 1
        if self.want_cues:
            self._caller_tilts.append(tilt)
            pitch = next((h[3] for h in reversed(self._hist) if abs(h[0] + WIN_MS - t_ms) < 1e-6), float("nan"))
            if pitch == pitch:
                self._caller_pitches.append(float(np.log2(pitch)))
                if len(self._caller_pitches) >= 10 and len(self._caller_pitches) % 4 == 0:
                    self._pitch_base = float(np.median(self._caller_pitches))
        if self._n_learned >= self.p.min_learn_windows and (self._n_learned % 4 == 0 or self._baseline is None):
            self._baseline = float(np.percentile([v for _, v in self._caller_levels], self.p.percentile))
            if self.want_cues:
                self._tilt_base = float(np.median(self._caller_tilts))

    def _near_caller_pitch(self, pitches: list[float]) -> bool:
        """Is this stretch's median pitch within `bg_learn_min_st` of the caller's (or unknown), so that it
        may be the caller's own soft speech? Always False when the guard is off."""
        if not self.p.bg_learn_min_st or self._pitch_base is None:
            return False
        if not pitches:
            return True
        return abs(12.0 * (float(np.log2(np.median(pitches))) - self._pitch_base)) < self.p.bg_learn_min_st

    def _learn_background(self, level: float, t_ms: float, *, pitch_checked: bool = False) -> None:
        """Rejected speech louder than the floor margin teaches the gate how loud the background is
        (`pitch_checked`: the caller's-pitch guard was applied to the whole stretch already)."""
        if not self.p.bg_mid_frac or level < self._floor + self.p.floor_margin_db:
            return
        if self.p.bg_learn_min_st and self._pitch_base is not None and not pitch_checked:
            d = self.cue_values(t_ms - WIN_MS)["pitch_dist_st"]
            if not d >= self.p.bg_learn_min_st:  # near the caller's pitch, or no voiced window yet
                return
        self._bg_levels.append((t_ms, level))
        while self._bg_levels and self._bg_levels[0][0] < t_ms - self.p.window_s * 1000:
            self._bg_levels.popleft()
        self._n_bg += 1
        if len(self._bg_levels) >= self.p.min_learn_windows and self._n_bg % 4 == 0:
            self._bg_level = float(np.percentile([v for _, v in self._bg_levels], self.p.percentile))
        elif len(self._bg_levels) < self.p.min_learn_windows:
            self._bg_level = None

    def _note_rejected(self, rejected: bool) -> None:
        if len(self._rejected) == self._rejected.maxlen:
            self._n_rejected -= self._rejected[0]
        self._rejected.append(rejected)
        self._n_rejected += rejected
        frac = self._n_rejected / self._rejected.maxlen
        if not self.media_mode and frac > self.p.media_on_frac:
            self.media_mode = True
        elif self.media_mode and frac < self.p.media_on_frac / 2:
            self.media_mode = False


class BackgroundSpeechGate(FrameProcessor):
    """Placed after the VAD: turns its speech edges into caller speech edges and background spans.

    Passes every frame on. The VAD's SpeechStartedFrame/SpeechEndedFrame are followed by the gate's
    CallerSpeechStartedFrame/CallerSpeechEndedFrame (only those start a user turn or a barge-in) and
    a BackgroundSpeechFrame (event `background_speech`, with start and end) for rejected speech. With
    two stages (`confirm_ms`), a CallerSpeechTentativeFrame comes first (the interruption handler pauses
    the bot on it) and a CallerSpeechRevokedFrame when it is not confirmed (the bot resumes).
    Per window the work is a few dot products and, on loud windows, one 512-point FFT (~20-100 µs), so it
    runs inline.
    """

    def __init__(self, analyzer: GateAnalyzer | None = None, *, filter_vad: bool = False, **kwargs) -> None:
        """`filter_vad=True`: downstream sees the VAD's speech frames only for the caller's speech (the
        gate swallows SpeechStartedFrame/SpeechEndedFrame and re-emits them at the caller's edges), so
        processors written for the plain VAD (an STT bridge, a barge-in handler) are gated unchanged."""
        super().__init__(**kwargs)
        self.analyzer = analyzer or GateAnalyzer()
        self.filter_vad = filter_vad
        self._pending = np.zeros(0, dtype=np.int16)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (self.filter_vad and isinstance(frame, SpeechStartedFrame | SpeechEndedFrame)):
            await self.push_frame(frame, direction)
        events: list[GateEvent] = []
        if isinstance(frame, InputAudioRawFrame):
            self._pending = np.concatenate([self._pending, np.frombuffer(frame.audio, dtype=np.int16)])
            n = len(self._pending) // WIN
            for i in range(n):
                events += self.analyzer.process_window(self._pending[i * WIN : (i + 1) * WIN])
            self._pending = self._pending[n * WIN :]
        elif isinstance(frame, SpeechStartedFrame):
            events = self.analyzer.vad_start(frame.t_ms)
        elif isinstance(frame, SpeechEndedFrame):
            events = self.analyzer.vad_end(frame.t_ms)
        bg_start: float | None = None
        for e in events:
            if e.kind == "caller_start":
                if self.filter_vad:
                    await self.push_frame(SpeechStartedFrame(t_ms=e.t_ms))
                await self.push_frame(CallerSpeechStartedFrame(t_ms=e.t_ms))
            elif e.kind == "caller_tentative":
                await self.push_frame(CallerSpeechTentativeFrame(t_ms=e.t_ms))
            elif e.kind == "caller_revoked":
                await self.push_frame(CallerSpeechRevokedFrame(t_ms=e.t_ms))
            elif e.kind == "caller_end":
                if self.filter_vad:
                    await self.push_frame(SpeechEndedFrame(t_ms=e.t_ms))
                await self.push_frame(CallerSpeechEndedFrame(t_ms=e.t_ms))
            elif e.kind == "background_start":
                bg_start = e.t_ms
            elif e.kind == "background_end" and bg_start is not None:
                await self.push_frame(BackgroundSpeechFrame(start_ms=bg_start, end_ms=e.t_ms, t_ms=e.t_ms))
