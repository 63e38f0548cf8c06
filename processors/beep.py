"""Voicemail-beep detection: a single steady tone of 400-2000 Hz lasting >= ~150 ms.

Split like Pipecat's VADAnalyzer/VADProcessor: `BeepAnalyzer` is plain synchronous DSP with its own
audio clock (samples seen / 8 => ms), so a replayed file and a live call give the same numbers;
`BeepDetector` is the thin FrameProcessor that feeds it 8 kHz PCM16 and pushes BeepFrame/BeepEndFrame.

How it decides (see `BeepAnalyzer` for the parameters):

* Every 5 ms a 32 ms Hann-windowed FFT gives the strongest peak in 250-3500 Hz, its frequency (sub-bin,
  parabolic on log magnitude) and level. A frame is *tonal* when the peak is in [min_hz, max_hz], loud
  enough, and every other spectral peak is >= `second_peak_db` below it (harmonics 2f-4f of the peak
  only need `harmonic_db`, so a clipped or µ-law-distorted beep still counts). Dual tones that the
  window resolves (busy, DTMF, SIT overlaps) fail here; voiced speech and sung vowels fail because
  several harmonics sit within a few dB of each other.
* Consecutive tonal frames at the same frequency form a *run*. The run is broken by a frequency jump
  or an amplitude dip of > `level_tol_db` below its maximum; a beep is a run whose frequency stays
  within max(`freq_tol_hz`, `freq_tol_rel` * f) of its median. Unresolved dual tones (ringback 440+480
  beats at 40 Hz) and vibrato/intonation fail this steadiness test long before 150 ms.
* Before it fires, a run must also (a) rise from >= `rise_db` below its level within the 80 ms
  before it became tonal (a beep starts; a note emerging from a fading chord does not), and (b) pass
  the same purity test on its power spectrum averaged over the frames fully inside the tone, with
  the stricter `avg_second_peak_db` and `second_harmonic_db`: averaging shrinks random noise peaks
  (a 10 dB SNR beep passes) but keeps the partials of music and voices, which one frame cannot tell
  from noise. This is what keeps sustained synth notes in hold music out.
* The greeting's edge: a beep that starts right where the last word ends, or overlaps it, has its
  first frames pulled off frequency by the voice's partials (and their level added to its own). Up to
  `edge_ms` of leading frames after the onset may then be left out of the steadiness and averaged-purity
  tests, provided what remains is itself steady (no glide), long enough (min_duration_ms - edge_ms) and
  clean; the onset uses the run's median level. A short beep whose masked start leaves it just under
  the minimum while it sounds is judged once it has ended ("beep" and "beep_end" together, one frame
  after the tone). The rise test is unchanged, so a voice partial at the beep's frequency within
  `rise_db` of it right before the tone still hides the tone (scripts/bench_beep_edge.py measures it).
* Onset and end are the -6 dB points of the run's level (a Hann window centred on a step edge sees
  exactly half the amplitude), interpolated between frames: error is a few ms, whatever the detection
  lag.
* SIT rule: the three SIT frequencies (913.8/985.2/950, 1370.6/1428.5/1400, 1776.7/1800 Hz, +-1.2 %)
  come as back-to-back single tones of 274-380 ms. A run at one of those frequencies that starts
  within `sit_gap_ms` of the end of a run at a *different* SIT frequency is a SIT segment and never
  fires. A run at a SIT frequency that is not preceded that way fires only once it has lasted
  `sit_max_ms` (longer than any SIT segment), or after it ended, when `sit_gap_ms` (+ 50 ms to see a
  new run) has passed without a different SIT frequency following. Those beeps are reported late
  ("beep" then "beep_end" together) but with the same onset accuracy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pipecat.frames.frames import CancelFrame, Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.batching import TickBatcher, check_pcm
from processors.frames import BeepEndFrame, BeepFrame, StopDetectorsFrame, TwilioStopFrame

SIT_FREQS_HZ: tuple[float, ...] = (913.8, 950.0, 985.2, 1370.6, 1400.0, 1428.5, 1776.7, 1800.0)

WIN = 256  # 32 ms analysis window
HOP = 40  # 5 ms hop
BIN_HZ = SAMPLE_RATE / WIN  # 31.25 Hz
_MS_PER_SAMPLE = 1000.0 / SAMPLE_RATE
_HALF_WIN_MS = WIN / 2 * _MS_PER_SAMPLE  # a frame's centre -> the audio time it was complete at
_INLINE_MAX_SAMPLES = SAMPLE_RATE // 5  # > 200 ms in one frame: analyse in a thread


@dataclass
class BeepEvent:
    """One analyzer event. "beep": t_ms = detection time; "beep_end": t_ms = estimated end of the tone."""

    kind: Literal["beep", "beep_end"]
    t_ms: float
    onset_ms: float
    hz: float
    duration_ms: float


@dataclass
class _Run:
    """Consecutive tonal frames at one frequency."""

    k: int  # FFT bin the run's level is measured at
    freqs: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # centre time (ms) of every frame, incl. look-back
    levels: list[float] = field(default_factory=list)  # linear magnitude at bin k (+-1), same frames
    first: int = 0  # index in times/levels of the first tonal frame
    peak: float = 0.0
    fired: bool = False
    rejected: bool = False  # a SIT segment or no rising edge: never fires
    misses: int = 0  # consecutive non-tonal frames tolerated (noise spikes) at full level
    specs: list[tuple[float, np.ndarray]] = field(default_factory=list)  # power spectra, first 80 frames
    fsum: float = 0.0
    ftimes: list[float] = field(default_factory=list)  # centre time of each tonal frame (freqs' times)

    def add(self, t: float, level: float, hz: float, spec: np.ndarray) -> None:
        """Append a tonal frame."""
        self.freqs.append(hz)
        self.ftimes.append(t)
        self.fsum += hz
        self.times.append(t)
        self.levels.append(level)
        self.peak = max(self.peak, level)
        if len(self.specs) < 80:
            self.specs.append((t, spec.astype(np.float64) ** 2))

    @property
    def n_tonal(self) -> int:
        return len(self.freqs)

    @property
    def hz(self) -> float:
        """Mean frequency of the tonal frames (cheap; the steadiness test uses the median)."""
        return self.fsum / max(len(self.freqs), 1)

    def rose(self, ratio: float) -> bool:
        """True when the level before the run was at most ratio x the run's peak (a tone that starts)."""
        return min(self.levels[: self.first + 1]) <= ratio * self.peak

    def onset_ms(self) -> float:
        """-6 dB point of the rising edge just before the run, interpolated between frame centres.

        The reference is the run's median level, not its peak: where a beep overlaps the greeting's
        last word the two add up for a few frames, and a peak from those would place the edge late.
        """
        half = 0.5 * float(np.median(self.levels[self.first :]))
        j = next(i for i in range(self.first, len(self.levels)) if self.levels[i] >= half)
        while j > 0 and self.levels[j - 1] >= half:
            j -= 1
        if j == 0:
            return self.times[0]
        a, b = self.levels[j - 1], self.levels[j]
        return self.times[j - 1] + (half - a) / (b - a) * (self.times[j] - self.times[j - 1])


@dataclass
class _Ending:
    """A finished run waiting for its level to fall below -6 dB, to place the end."""

    run: _Run
    t_prev: float
    l_prev: float
    waited: int = 0


@dataclass
class _Pending:
    """A finished SIT-frequency beep waiting to be sure no other SIT tone follows."""

    run: _Run
    end_ms: float


class BeepAnalyzer:
    """Streaming voicemail-beep detector on 8 kHz PCM16; plain synchronous code, no asyncio.

    Feed any chunk size to `process`; it keeps its own audio clock and returns the events found.
    Detection needs the tone to be steady for `min_duration_ms` (- 10 ms tolerance for the -6 dB
    edge estimate); "beep" then fires while the tone still sounds (except the SIT case, see module).

    Parameters (defaults tuned on the acceptance tests and 18 min of Asterisk hold music):
    min_hz/max_hz: beep band (+- band_margin_rel for estimate bias); min_duration_ms: shortest beep;
    min_level_dbfs: quietest beep (tone peak, dBFS); second_peak_db / harmonic_db: per-frame purity
    (other peaks / harmonics 2f-4f below the peak); avg_second_peak_db / second_harmonic_db: the same
    on the run-averaged spectrum before firing; freq_tol_hz / freq_tol_rel: max frequency deviation
    from the run's median; level_tol_db: max dip below the run's peak level; hangover_frames: noisy
    frames tolerated inside a run; rise_db: required rise into the tone; sit_*: the SIT rule.
    """

    def __init__(
        self,
        *,
        min_hz: float = 400.0,
        max_hz: float = 2000.0,
        min_duration_ms: float = 150.0,
        min_level_dbfs: float = -45.0,
        second_peak_db: float = 16.0,
        avg_second_peak_db: float = 21.0,
        second_harmonic_db: float = 20.0,
        harmonic_db: float = 12.0,
        freq_tol_hz: float = 4.0,
        freq_tol_rel: float = 0.005,
        level_tol_db: float = 3.0,
        hangover_frames: int = 2,
        band_margin_rel: float = 0.02,
        rise_db: float = 10.0,
        sit_freqs_hz: tuple[float, ...] = SIT_FREQS_HZ,
        sit_tol_rel: float = 0.012,
        sit_gap_ms: float = 100.0,
        sit_max_ms: float = 450.0,
        edge_ms: float = 60.0,
    ) -> None:
        self.min_hz, self.max_hz = min_hz, max_hz
        self.min_duration_ms = min_duration_ms
        self.min_mag = 10 ** (min_level_dbfs / 20) * 32768.0 * WIN / 4  # tone peak amp -> |X| of Hann FFT
        self.second_ratio = 10 ** (second_peak_db / 10)
        self.harmonic_ratio = 10 ** (harmonic_db / 10)
        self.avg_second_ratio = 10 ** (avg_second_peak_db / 10)
        self.h2_ratio = 10 ** (second_harmonic_db / 10)
        self.freq_tol_hz, self.freq_tol_rel = freq_tol_hz, freq_tol_rel
        self.level_ratio = 10 ** (-level_tol_db / 20)
        self.hangover = hangover_frames
        self.band_margin = band_margin_rel
        self.rise_ratio = 10 ** (-rise_db / 20)
        self.sit_freqs = np.asarray(sit_freqs_hz)
        self.sit_tol_rel, self.sit_gap_ms, self.sit_max_ms = sit_tol_rel, sit_gap_ms, sit_max_ms
        self.edge_ms = edge_ms
        self._window = np.hanning(WIN + 1)[:WIN].astype(np.float32)  # periodic Hann
        self._lo = int(250 / BIN_HZ)
        self._hi = int(np.ceil(3500 / BIN_HZ))
        self._bins = np.arange(WIN // 2 + 1)
        self._taps = np.arange(WIN)
        self._band_mask = ((self._bins >= self._lo) & (self._bins < self._hi)).astype(np.float64)
        self._lobe3 = np.arange(-3, 4)
        self._harm_mult = np.repeat([2.0, 3.0, 4.0], 5)
        self._harm_off = np.tile(np.arange(-2, 3), 3)
        self.reset()

    def reset(self) -> None:
        """Forget everything, including the clock (a new call)."""
        self._buf = np.zeros(WIN - HOP, dtype=np.float32)  # zeros before t=0 so frame 0 ends at 5 ms
        self._frames = 0
        self._samples = 0
        # (centre ms, |X|) of the last frames, seeded with silence before t=0 so a tone at the very
        # start still shows a rising edge.
        self._history: deque[tuple[float, np.ndarray]] = deque(
            [(-(i + 1) * HOP * _MS_PER_SAMPLE, np.zeros(WIN // 2 + 1, np.float32)) for i in range(16)][::-1],
            maxlen=16,
        )
        self._run: _Run | None = None
        self._endings: list[_Ending] = []
        self._pending: list[_Pending] = []
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=6)  # (hz, onset, end) of runs

    @property
    def tracking(self) -> bool:
        """A tone is being followed (a run, its end, or a SIT wait): its events depend on every frame."""
        return self._run is not None or bool(self._endings) or bool(self._pending)

    @property
    def now_ms(self) -> float:
        """Audio time of the end of the audio seen so far."""
        return self._samples * _MS_PER_SAMPLE

    # --- streaming ---------------------------------------------------------------------------

    def process(self, pcm: np.ndarray | bytes) -> list[BeepEvent]:
        """Analyse the next chunk of 8 kHz PCM16 (any length) and return the events it completed."""
        x = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray | memoryview) else pcm
        self._samples += len(x)
        buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        n = (len(buf) - WIN) // HOP + 1 if len(buf) >= WIN else 0
        events: list[BeepEvent] = []
        if n > 0:
            self._analyse(buf[np.arange(n)[:, None] * HOP + self._taps], events)
        self._buf = buf[n * HOP :].copy()
        return events

    def flush(self) -> list[BeepEvent]:
        """End of stream: push 100 ms of silence through so a tone at the very end gets its beep_end."""
        return self.process(np.zeros(SAMPLE_RATE // 10 + WIN, dtype=np.int16))

    # --- per-frame features (vectorised) --------------------------------------------------------

    def _features(
        self, frames: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per frame: |X|, peak bin, peak Hz, peak magnitude, and whether the frame is tonal."""
        mag = np.abs(np.fft.rfft(frames * self._window, axis=1))
        pw = mag * mag + 1e-9
        lo, hi = self._lo, self._hi
        k = np.argmax(pw[:, lo:hi], axis=1) + lo
        r = np.arange(len(k))
        a, b, c = np.log(pw[r, k - 1]), np.log(pw[r, k]), np.log(pw[r, k + 1])
        den = a - 2 * b + c
        d = np.clip(np.where(den < 0, 0.5 * (a - c) / np.minimum(den, -1e-12), 0.0), -0.5, 0.5)
        hz = (k + d) * BIN_HZ
        ppk = np.exp(b - 0.25 * (a - c) * d)  # parabolic-interpolated peak power
        in_band = (hz >= self.min_hz * (1 - self.band_margin)) & (hz <= self.max_hz * (1 + self.band_margin))
        candidate = in_band & (ppk >= self.min_mag**2)
        if not candidate.any():  # silence, noise, low-level speech: no frame can be tonal (most of a call)
            return mag, k, hz, np.sqrt(ppk), candidate
        # Strongest other peak: zero the main lobe (+-3 bins) and the lobes of harmonics 2f-4f, which
        # are judged on their own (clipping and µ-law add some), then take the max over the band.
        band = pw * self._band_mask
        last = WIN // 2
        main_idx = np.clip(k[:, None] + self._lobe3, 0, last)
        harm_idx = np.clip(
            np.rint((k + d)[:, None] * self._harm_mult).astype(np.intp) + self._harm_off, 0, last
        )
        ph = np.take_along_axis(band, harm_idx, axis=1).max(axis=1)
        np.put_along_axis(band, main_idx, 0.0, axis=1)
        np.put_along_axis(band, harm_idx, 0.0, axis=1)
        p2 = band.max(axis=1)
        tonal = (
            candidate
            & (ppk >= self.second_ratio * p2)
            & (ppk >= self.harmonic_ratio * ph)
        )
        return mag, k, hz, np.sqrt(ppk), tonal

    def _analyse(self, frames: np.ndarray, events: list[BeepEvent]) -> None:
        mag, ks, hzs, _peaks, tonal = self._features(frames)
        if not self.tracking and not tonal.any():
            # Nothing to follow and nothing starts: each frame would only enter the look-back history.
            first = self._frames + 1
            self._frames += len(frames)
            for i in range(max(0, len(frames) - self._history.maxlen), len(frames)):  # type: ignore[operator]
                self._history.append((((first + i) * HOP - WIN / 2) * _MS_PER_SAMPLE, mag[i]))
            return
        for i in range(len(frames)):
            self._frames += 1
            t = (self._frames * HOP - WIN / 2) * _MS_PER_SAMPLE  # centre of this window
            spec = mag[i]
            self._step(t, spec, int(ks[i]), float(hzs[i]), bool(tonal[i]), events)
            self._history.append((t, spec))

    # --- run tracking ---------------------------------------------------------------------------

    def _level(self, spec: np.ndarray, k: int) -> float:
        return float(spec[k - 1 : k + 2].max())

    def _is_sit(self, hz: float) -> bool:
        """Within tolerance of one of the SIT frequencies."""
        if len(self.sit_freqs) == 0:
            return False
        return bool(np.min(np.abs(self.sit_freqs - hz) - self.sit_tol_rel * self.sit_freqs) <= 0)

    def _other_sit(self, hz: float, ref_hz: float) -> bool:
        """`hz` is a SIT frequency different from `ref_hz` (the next or previous SIT segment)."""
        return self._is_sit(hz) and abs(hz - ref_hz) > self.sit_tol_rel * ref_hz

    def _freq_tol(self, hz: float) -> float:
        return max(self.freq_tol_hz, self.freq_tol_rel * hz)

    def _step(
        self, t: float, spec: np.ndarray, k: int, hz: float, tonal: bool, events: list[BeepEvent]
    ) -> None:
        for e in list(self._endings):  # finished runs: find where their level falls through -6 dB
            self._advance_ending(e, t, spec, events)
        run = self._run
        if run is not None:
            lv = self._level(spec, run.k)
            loud = lv >= self.level_ratio * run.peak
            same = abs(hz - run.hz) <= max(3 * self._freq_tol(run.hz), 0.02 * run.hz)
            if tonal and same and loud:
                run.misses = 0
                run.add(t, lv, hz, spec)
                self._decide(run, t, events)
            elif loud and run.misses < self.hangover and run.n_tonal >= 3:
                run.misses += 1  # a noise spike hid the tone in this frame: keep the run, learn nothing
                run.times.append(t)
                run.levels.append(lv)
            else:
                self._run = None
                e = _Ending(run, run.times[-1], run.levels[-1])
                self._endings.append(e)
                self._advance_ending(e, t, spec, events)
        if self._run is None and tonal:
            self._start_run(t, spec, k, hz)
        self._check_pending(t, events)

    def _advance_ending(self, e: _Ending, t: float, spec: np.ndarray, events: list[BeepEvent]) -> None:
        lv = self._level(spec, e.run.k)
        half = 0.5 * e.run.peak
        e.waited += 1
        if lv < half:
            end = e.t_prev + (e.l_prev - half) / max(e.l_prev - lv, 1e-9) * (t - e.t_prev)
        elif e.waited > 8:  # never fell (something else loud at that frequency): end at last full frame
            end = e.t_prev
        else:
            e.t_prev, e.l_prev = t, lv
            return
        self._endings.remove(e)
        self._finish(e.run, end, t, events)

    def _start_run(self, t: float, spec: np.ndarray, k: int, hz: float) -> None:
        run = _Run(k=k)
        for ht, hspec in self._history:  # look-back for the rising edge
            run.times.append(ht)
            run.levels.append(self._level(hspec, k))
        run.first = len(run.times)
        run.add(t, self._level(spec, k), hz, spec)
        if self._is_sit(hz):
            onset_guess = t - _HALF_WIN_MS
            for rhz, _ron, rend in self._recent:
                if self._other_sit(rhz, hz) and onset_guess - rend <= self.sit_gap_ms:
                    run.rejected = True  # a later SIT segment
        self._run = run

    def _is_beep(self, run: _Run, onset: float) -> bool:
        """Steady frequency, a real rising edge, and a clean run-averaged spectrum.

        Averaging the power spectrum over the frames fully inside the tone shrinks random noise
        peaks (so a 10 dB SNR beep passes) but keeps the partials of music and voices, which a single
        frame cannot tell apart from noise.
        """
        settled = self._settled(run, onset)
        if settled is None:
            return False
        t_settle, med = settled
        if not run.rose(self.rise_ratio):
            return False  # already sounding before it became tonal: a note emerging from music
        start = max(onset + 14.0, t_settle)
        inside = [p for tt, p in run.specs if tt >= start] or [p for _tt, p in run.specs[-5:]]
        if self._clean(inside, med):
            return True
        # A tone at the greeting's edge: the first frames still hold the last word's partials. Judge
        # the frames past the edge zone alone, when there are enough of them.
        past_edge = [p for tt, p in run.specs if tt >= onset + _HALF_WIN_MS + self.edge_ms]
        return len(past_edge) >= 5 and len(past_edge) < len(inside) and self._clean(past_edge, med)

    def _clean(self, specs: list[np.ndarray], med: float) -> bool:
        """The averaged power spectrum has one partial at `med`: no other peak, no strong harmonics."""
        avg = np.mean(specs, axis=0)
        s3 = np.convolve(avg, np.ones(3), mode="same")
        kf = med / BIN_HZ
        k = int(round(kf))
        main = s3[k]
        dist = np.abs(self._bins - kf)
        band = (self._bins >= self._lo) & (self._bins < self._hi) & (dist > 4.0)
        harm = np.zeros_like(band)
        for h in (2, 3, 4):
            near = np.abs(self._bins - h * kf) <= 3.0
            need = self.h2_ratio if h == 2 else self.harmonic_ratio
            if np.any(band & near) and main < need * float(np.max(s3[band & near])):
                return False
            harm |= near
        others = s3[band & ~harm]
        return not (len(others) and main < self.avg_second_ratio * float(np.max(others)))

    def _settled(self, run: _Run, onset: float) -> tuple[float, float] | None:
        """(time from which the run's frequency is steady, its median), or None if it never is.

        The frames whose window still holds the end of the greeting's last word (a beep that starts
        right where speech ends, or overlaps it) have their peak pulled by the voice's partials, so
        up to `edge_ms` of leading frames after the onset may be left out of the steadiness test; a
        clean tone is steady from its first frame, as before.
        """
        f = np.asarray(run.freqs)
        times = run.ftimes
        latest = onset + _HALF_WIN_MS + self.edge_ms
        for i in range(len(f)):
            if i and times[i] > latest:
                break
            seg = f[i:]
            if len(seg) < 3:
                break
            med = float(np.median(seg))
            tol = self._freq_tol(med)
            if np.max(np.abs(seg - med)) > tol:
                continue
            # Leading frames left out: the rest must not glide either (a partial of speech or music
            # drifting slowly stays within +-tol of its median); the last two frames may straddle the end.
            # It must also be long enough by itself: min_duration_ms less the edge allowance.
            body = seg[:-2] if len(seg) > 5 else seg
            long_enough = times[-1] - times[i] + HOP * _MS_PER_SAMPLE >= self.min_duration_ms - self.edge_ms
            if i == 0 or (long_enough and float(np.ptp(body)) <= tol):
                return times[i], med
        return None

    def _decide(self, run: _Run, t: float, events: list[BeepEvent]) -> None:
        if run.fired or run.rejected:
            return
        onset = run.onset_ms()
        dur = t + 5.0 - onset
        if dur < self.min_duration_ms - 10.0 or (self._is_sit(run.hz) and dur < self.sit_max_ms):
            return
        if not self._is_beep(run, onset):
            if dur > self.min_duration_ms + 100.0:
                run.rejected = True  # stop re-checking a long non-beep (music note, dual tone)
            return
        run.fired = True
        events.append(BeepEvent("beep", t_ms=t + _HALF_WIN_MS, onset_ms=onset, hz=run.hz, duration_ms=dur))

    def _finish(self, run: _Run, end: float, t: float, events: list[BeepEvent]) -> None:
        onset = run.onset_ms()
        if run.n_tonal >= 3:
            self._recent.append((run.hz, onset, end))
        if run.fired:
            events.append(BeepEvent("beep_end", t_ms=end, onset_ms=onset, hz=run.hz, duration_ms=end - onset))
        elif (
            run.rejected
            or end - onset < self.min_duration_ms - 10.0
            or run.ftimes[-1] - run.ftimes[0] + HOP * _MS_PER_SAMPLE < self.min_duration_ms - self.edge_ms
            or not self._is_beep(run, onset)
        ):
            return
        elif self._is_sit(run.hz):
            self._pending.append(_Pending(run, end))
        else:
            # Long enough only counting to its end: a short beep whose first frames the greeting's last
            # word masked. Reported now, "beep" and "beep_end" together, a frame after the tone ended.
            dur = end - onset
            events.append(BeepEvent("beep", t_ms=t + _HALF_WIN_MS, onset_ms=onset, hz=run.hz, duration_ms=dur))
            events.append(BeepEvent("beep_end", t_ms=end, onset_ms=onset, hz=run.hz, duration_ms=dur))

    def _check_pending(self, t: float, events: list[BeepEvent]) -> None:
        for p in list(self._pending):
            hz = p.run.hz
            follows = any(ron > p.end_ms - 20.0 and self._other_sit(rhz, hz) for rhz, ron, _ in self._recent)
            run = self._run
            if (
                run is not None
                and run.n_tonal >= 3
                and self._other_sit(run.hz, hz)
                and run.times[run.first] - _HALF_WIN_MS - p.end_ms <= self.sit_gap_ms
            ):
                follows = True
            if follows:  # the next SIT segment came: this was SIT, not a beep
                self._pending.remove(p)
            elif t - _HALF_WIN_MS >= p.end_ms + self.sit_gap_ms + 50.0:
                self._pending.remove(p)
                onset, dur = p.run.onset_ms(), p.end_ms - p.run.onset_ms()
                events.append(
                    BeepEvent("beep", t_ms=t + _HALF_WIN_MS, onset_ms=onset, hz=hz, duration_ms=dur)
                )
                events.append(BeepEvent("beep_end", t_ms=p.end_ms, onset_ms=onset, hz=hz, duration_ms=dur))


STOPPED_CHUNK_MS = 1000  # BeepDetector's frames once detection has stopped (a multiple of any chunk_ms)

_BEEP_BATCHER: TickBatcher[tuple[BeepAnalyzer, np.ndarray], list[BeepEvent]] = TickBatcher(
    lambda items: [analyzer.process(pcm) for analyzer, pcm in items], "beep", check=lambda item: check_pcm(item[1])
)


class BeepDetector(FrameProcessor):
    """Pipecat adapter: runs `BeepAnalyzer` on 8 kHz input audio, pushes BeepFrame/BeepEndFrame, and
    forwards the audio to the rest of the call in `chunk_ms` frames.

    Why chunks: every processor after this one costs CPU per frame, and nothing after it needs
    Twilio's 20 ms packets while no tone is sounding (speech and AMD time their events on the audio
    clock; AMD steps are 100 ms). So while the analyzer tracks no tone, 20 ms packets are held and
    analysed and forwarded together once a chunk boundary (a multiple of `chunk_ms` from the start
    of the call, so AMD steps stay aligned) is reached. While a tone is tracked (a candidate beep,
    its end, a SIT wait) every packet is analysed and forwarded at once, so the beep's end reaches
    the workflow as soon as it did with per-packet analysis. Any other downstream frame first
    flushes the held audio, so frame order (and every processor's audio clock) is unchanged; after
    Twilio's `stop` (which may overtake the last packets) nothing is held any more.
    `chunk_ms=0` forwards every frame as it comes. Chunks are analysed on the shared inference thread
    with every other call's (processors/batching.py), packets while a tone is followed on the loop (a
    20 ms packet costs ~0.1 ms, and the beep's end must not wait), long frames (> 200 ms) in a thread.
    A StopDetectorsFrame from upstream (the workflow needs no more detection: a voicemail_drop's
    message is playing) ends the analysis; audio then goes on in `STOPPED_CHUNK_MS` chunks (nothing
    downstream needs it finer, and each frame costs every later processor a hop). It is consumed here.
    """

    def __init__(self, analyzer: BeepAnalyzer | None = None, *, chunk_ms: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.analyzer = analyzer or BeepAnalyzer()
        self._warned = False
        self._chunk = chunk_ms * SAMPLE_RATE // 1000
        self._held: list[InputAudioRawFrame] = []
        self._held_samples = 0
        self._samples_out = 0  # samples forwarded downstream so far
        self.stopped = False  # a StopDetectorsFrame came: no more analysis
        self.stopped_chunk_ms = STOPPED_CHUNK_MS  # the chunks after that (a replay keeps chunk_ms)

    @property
    def chunk_ms(self) -> int:
        """The size of the frames forwarded now (0: every frame as it comes)."""
        return self._chunk * 1000 // SAMPLE_RATE

    @property
    def max_chunk_ms(self) -> int:
        """The most audio it may hold back at once, now or after detection stops (0: none)."""
        return max(self.chunk_ms, self.stopped_chunk_ms) if self._chunk > 0 else 0

    @property
    def passes_packets(self) -> bool:
        """Every packet goes on at once now (a tone is being followed)."""
        return self.analyzer.tracking and not self.stopped

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Analyse/hold input audio; flush held audio before forwarding anything else downstream."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StopDetectorsFrame):
            if not frame.amd_only and not self.stopped:
                self.stopped = True
                if self._chunk > 0:
                    self._chunk = max(self._chunk, self.stopped_chunk_ms * SAMPLE_RATE // 1000)
            return
        if not isinstance(frame, InputAudioRawFrame):
            if self._held and direction == FrameDirection.DOWNSTREAM and not isinstance(frame, CancelFrame):
                await self._flush()
            if isinstance(frame, TwilioStopFrame):
                self._chunk = 0  # the caller is gone: audio still queued goes straight on to the end
            await self.push_frame(frame, direction)
            return
        if frame.sample_rate != SAMPLE_RATE or frame.num_channels != 1:
            await self.push_frame(frame, direction)
            if not self._warned:  # misconfigured pipeline: say so once, keep the call alive
                self._warned = True
                await self.push_error(
                    error_msg=f"BeepDetector needs 8 kHz mono audio, got {frame.sample_rate} Hz x {frame.num_channels}"
                )
            return
        if self._chunk <= 0:
            await self.push_frame(frame, direction)
            await self._push_events(await self._analyse(frame.audio))
            return
        self._held.append(frame)
        self._held_samples += len(frame.audio) // 2
        end = self._samples_out + self._held_samples
        if self.passes_packets or end // self._chunk > self._samples_out // self._chunk:
            await self._flush()

    async def _flush(self) -> None:
        """Analyse the held audio, forward it as one frame, then push the events it completed."""
        held, last = self._held, self._held[-1]
        self._held, self._samples_out, self._held_samples = [], self._samples_out + self._held_samples, 0
        if len(held) > 1:
            last = InputAudioRawFrame(
                audio=b"".join(f.audio for f in held), sample_rate=SAMPLE_RATE, num_channels=1
            )
            last.transport_source = held[-1].transport_source
        await self.push_frame(last)
        await self._push_events(await self._analyse(last.audio))

    async def _analyse(self, audio: bytes) -> list[BeepEvent]:
        if self.stopped:
            return []
        pcm = np.frombuffer(audio, dtype=np.int16)
        if len(pcm) > _INLINE_MAX_SAMPLES:
            return await asyncio.to_thread(self.analyzer.process, pcm)
        if self._chunk > 0 and not self.analyzer.tracking:
            # A quiet chunk: analysed with every other call's on the shared inference thread.
            return await _BEEP_BATCHER.submit((self.analyzer, pcm))
        return self.analyzer.process(pcm)  # a tone is followed: this packet now, on the loop (~0.1 ms)

    async def _push_events(self, events: list[BeepEvent]) -> None:
        for ev in events:
            if ev.kind == "beep":
                await self.push_frame(BeepFrame(onset_ms=ev.onset_ms, hz=ev.hz, t_ms=ev.t_ms))
            else:
                await self.push_frame(
                    BeepEndFrame(onset_ms=ev.onset_ms, hz=ev.hz, duration_ms=ev.duration_ms, t_ms=ev.t_ms)
                )
