"""Run callgate's listening stack and the three baselines over one labelled call, offline, in audio time.

Every system sees the same 8 kHz file, 20 ms frame by frame, like a Twilio stream:

* `callgate`: processors.speech.SpeechAnalyzer (Silero) -> processors.gate.GateAnalyzer ->
  processors.endpointer.EndpointAnalyzer, with Pipecat's bundled Smart-Turn v3 answering each pause
  request `infer_ms` later (it runs on a worker thread live) and transcripts given by the labels: the
  words of each spoken segment become known `stt_lag_ms` after the segment ends (an oracle STT).
* `timer_800ms`: Pipecat's Silero VAD analyzer (default params) with stop_secs = 0.8: the turn ends
  when the VAD stops, i.e. after 800 ms of silence.
* `pipecat_default`: Pipecat's Silero VAD analyzer with its default params (confidence 0.7, start 0.2 s,
  stop 0.2 s, min_volume 0.6) and LocalSmartTurnAnalyzerV3 as TurnAnalyzerUserTurnStopStrategy drives
  it: Smart-Turn on VAD stop over the turn's audio from 500 ms + start_secs before its first VAD start,
  last 8 s; complete (p > 0.5) ends the turn, else 3 s of silence does (SmartTurnParams defaults).
* `vad_only`: the same Pipecat VAD, no gate: every VAD start is a turn start / barge-in, every VAD
  stop a turn end.

Each system yields turn starts (emission time and the start they claim), final turn ends, tentative
ends and cancels, and the intervals it treats as caller speech; turn_eval.metrics scores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, load_audio
from processors.endpointer import EndpointAnalyzer, EndpointerParams, SmartTurnModel, TextCompletenessModel
from processors.gate import WIN, WIN_MS, GateAnalyzer, GateEvent, GateParams
from processors.speech import SpeechAnalyzer, SpeechEvent

SYSTEMS = ("callgate", "timer_800ms", "pipecat_default", "vad_only")


@dataclass
class SystemRun:
    """What one system did on one call (all times in ms of audio)."""

    starts: list[tuple[float, float]] = field(default_factory=list)  # (emitted at, claimed start)
    ends: list[float] = field(default_factory=list)  # final turn ends
    tentative: list[float] = field(default_factory=list)
    cancels: list[float] = field(default_factory=list)
    speech: list[tuple[float, float]] = field(default_factory=list)  # user turns (claimed start, end)
    vad_starts: list[float] = field(default_factory=list)  # callgate: ungated VAD start emissions
    vad_ends: list[float] = field(default_factory=list)  # callgate: ungated VAD segment ends
    # callgate: the gate's caller-speech starts (emitted at, claimed start): each one is what the
    # interruption handler barges in on, whether or not the endpointer opens a new turn for it.
    gate_starts: list[tuple[float, float]] = field(default_factory=list)
    gate_ends: list[float] = field(default_factory=list)  # callgate: the gate's caller-speech ends
    # callgate, two-stage gate: tentative openings (emitted at, claimed start): the bot pauses, no turn
    # starts; each is later confirmed (a gate start) or revoked
    gate_tentatives: list[tuple[float, float]] = field(default_factory=list)


class CachedSmartTurn:
    """Smart-Turn probabilities memoised by (session, file, turn-audio bounds): tuning reruns never re-infer.

    Two sessions: callgate's (float attention softmax, processors.endpointer.smart_turn_graph) and, for the
    Pipecat baseline, Pipecat's own.
    """

    def __init__(self) -> None:
        self._models: dict[str, SmartTurnModel] = {}
        self.cache: dict[tuple[str, str, int, int], float] = {}
        self.calls = 0

    def probability(self, key: str, pcm: np.ndarray, a: int, b: int, *, pipecat: bool = False) -> float:
        session = "pipecat" if pipecat else "callgate"
        k = (session, key, a, b)
        if k not in self.cache:
            if session not in self._models:
                self._models[session] = SmartTurnModel(float_softmax=not pipecat)
            self.cache[k] = self._models[session].probability(pcm[max(0, a) : b])
            self.calls += 1
        return self.cache[k]


@dataclass
class CallInputs:
    """One call, loaded once: audio, labels, Silero confidences and Pipecat VAD per-frame states."""

    name: str
    pcm: np.ndarray
    labels: dict[str, Any]
    conf: np.ndarray  # SpeechAnalyzer's Silero confidence per 32 ms window
    pipecat_states: dict[str, list[int]]  # VAD state per 20 ms frame, for stop 0.2 s and 0.8 s


def _pipecat_states(pcm: np.ndarray, stop_secs: float) -> list[int]:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams

    vad = SileroVADAnalyzer(sample_rate=8000, params=VADParams(stop_secs=stop_secs))
    vad.set_sample_rate(8000)
    out = []
    for i in range(len(pcm) // FRAME_SAMPLES):
        out.append(vad._run_analyzer(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes()).value)
    return out


def speech_confidences(pcm: np.ndarray, vad: Any, min_dbfs: float = -50.0) -> np.ndarray:
    """Silero confidence per window exactly as SpeechAnalyzer sees it: it skips windows quieter than
    min_dbfs (so they never touch the model's state) and those score 0."""
    min_rms = 32768.0 * 10 ** (min_dbfs / 20)
    out = np.zeros(len(pcm) // WIN, dtype=np.float32)
    for i in range(len(out)):
        win = pcm[i * WIN : (i + 1) * WIN]
        if float(np.sqrt(np.mean(win.astype(np.float32) ** 2))) >= min_rms:
            out[i] = np.ravel(vad.voice_confidence(win.tobytes()))[0]
    return out


def load_call(folder: Path, name: str, labels: dict[str, Any]) -> CallInputs:
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    pcm = load_audio(folder / name)
    pcm = pcm[: len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES]
    vad = SileroVADAnalyzer(sample_rate=8000)
    vad.set_sample_rate(8000)
    conf = speech_confidences(pcm, vad)
    states = {"0.2": _pipecat_states(pcm, 0.2), "0.8": _pipecat_states(pcm, 0.8)}
    return CallInputs(name, pcm, labels, conf, states)


# --- Pipecat baselines -------------------------------------------------------------------------------

SPEAKING, QUIET = 3, 1
FRAME_MS = 20.0


def run_vad_baseline(call: CallInputs, stop: str = "0.2") -> SystemRun:
    """VAD-only (stop 0.2 s) or the 800 ms timer (stop 0.8 s): turn = VAD start .. VAD stop."""
    run = SystemRun()
    speaking, since = False, 0.0
    for i, s in enumerate(call.pipecat_states[stop]):
        t = (i + 1) * FRAME_MS
        if not speaking and s == SPEAKING:
            speaking = True
            since = t - 200.0  # the VAD confirmed 0.2 s of speech
            run.starts.append((t, since))
        elif speaking and s == QUIET:
            speaking = False
            run.ends.append(t)
            run.speech.append((since, t))
    return run


def run_pipecat_default(call: CallInputs, smart: CachedSmartTurn, infer_ms: float = 64.0) -> SystemRun:
    """Silero VAD + Smart-Turn v3 as TurnAnalyzerUserTurnStopStrategy runs it (default params)."""
    run = SystemRun()
    states = call.pipecat_states["0.2"]
    in_turn = False
    speaking = False
    turn_speech_start = 0.0
    silence_from: float | None = None
    pending_end: float | None = None
    pre_ms = 500.0 + 200.0  # pre_speech_ms + VAD start_secs
    for i, s in enumerate(states):
        t = (i + 1) * FRAME_MS
        if pending_end is not None and t >= pending_end:
            run.ends.append(pending_end)
            run.speech.append((turn_speech_start - 200.0, pending_end))
            pending_end, in_turn, silence_from = None, False, None
        if not speaking and s == SPEAKING:
            speaking = True
            pending_end = None  # speech resumed before the inference came back
            silence_from = None
            if not in_turn:
                in_turn, turn_speech_start = True, t
                run.starts.append((t, t - 200.0))
        elif speaking and s == QUIET:
            speaking = False
            silence_from = t
            a = int((turn_speech_start - pre_ms) * 8)
            b = int(t * 8)
            a = max(a, b - 8 * 8000)
            p = smart.probability(call.name, call.pcm, a, b, pipecat=True)
            if p > 0.5:
                pending_end = t + infer_ms
        elif in_turn and not speaking and silence_from is not None and pending_end is None:
            if t - silence_from >= 3000.0:
                run.ends.append(t)
                run.speech.append((turn_speech_start - 200.0, t))
                in_turn, silence_from = False, None
    return run


# --- callgate ------------------------------------------------------------------------------------


def run_callgate(
    call: CallInputs,
    smart: CachedSmartTurn,
    gate_params: GateParams,
    ep_params: EndpointerParams,
    text_model: TextCompletenessModel | None,
    vad_params: dict[str, float] | None = None,
    infer_ms: float = 64.0,
    stt_lag_ms: float = 250.0,
    use_audio: bool = True,
) -> SystemRun:
    run = SystemRun()
    if (vad_params or {}).get("min_dbfs", -50.0) != -50.0:
        raise ValueError("the cached Silero confidences assume the VAD's min_dbfs = -50")
    # The production SpeechAnalyzer state machine, fed the confidences Silero gave this file.
    vad = _speech_analyzer(call.conf, vad_params or {})
    gate = GateAnalyzer(gate_params)
    ep = EndpointAnalyzer(ep_params, text_model=text_model, use_text=text_model is not None)
    words = oracle_words(call.labels, stt_lag_ms)
    pending: list[tuple[float, int, float]] = []  # (ready at, pause id, p)
    caller_start: float | None = None
    turn_start = 0.0
    last_text = ""
    open_since: float | None = None
    for i, win, gev, _vad_end in gated_windows(call, vad, gate, run):
        t0, t1 = i * WIN_MS, (i + 1) * WIN_MS
        for e in gev:
            if e.kind == "caller_start":
                caller_start = e.t_ms
        # What arrived before this window is complete (t1) is known to its decision, as live: a window is
        # processed when its last audio arrives, after any transcript or Smart-Turn answer that came first
        # (the Pipecat baseline above applies its inference the same way).
        for _ready, pid, p in [x for x in pending if x[0] <= t1]:
            ep.set_audio_probability(pid, p)
        pending = [x for x in pending if x[0] > t1]
        if text_model is not None and ep.state != "idle":
            text = " ".join(w for ready, st, w in words if ready <= t1 and st >= turn_start - 300)
            if text != last_text:
                ep.set_transcript(text)
                last_text = text
        caller = gate.window_is_caller(t0)
        for e in ep.process_window(win, caller, caller_start if caller else None, hold=gate.tentative_heard):
            if e.kind == "user_turn_start":
                run.starts.append((t1, e.t_ms))
                turn_start, last_text = e.t_ms, ""
                open_since = e.t_ms
            elif e.kind == "turn_cancelled":
                run.cancels.append(e.t_ms)
            elif e.tentative:
                run.tentative.append(e.t_ms)
            else:
                run.ends.append(e.t_ms)
                if open_since is not None:
                    run.speech.append((open_since, e.t_ms))
                    open_since = None
        if caller:
            caller_start = None
        req = ep.pending_audio_request
        if req is not None:
            ep.pending_audio_request = None
            if use_audio:
                b = int(req.t_ms * 8)
                a = max(int((ep._turn_start - 500.0) * 8), b - 8 * 8000)
                p = smart.probability(call.name, call.pcm, a, b)
                pending.append((req.t_ms + infer_ms, req.pause_id, p))
    if open_since is not None:
        run.speech.append((open_since, len(call.pcm) // WIN * WIN_MS))
    return run


def oracle_words(labels: dict[str, Any], lag_ms: float) -> list[tuple[float, float, str]]:
    """(known at, spoken from, word) for every word: an STT that is right and `lag_ms` behind.

    Word times inside a segment are spread by character count (the labels time segments, not words).
    """
    out = []
    for turn in labels["turns"]:
        for seg in turn["segments"]:
            ws = seg["text"].split()
            a, b = float(seg["start_ms"]), float(seg["end_ms"])
            total = sum(len(w) + 1 for w in ws)
            acc = 0
            for w in ws:
                st = a + (b - a) * acc / total
                acc += len(w) + 1
                out.append((a + (b - a) * acc / total + lag_ms, st, w))
    return out


class _ReplayedSpeechAnalyzer(SpeechAnalyzer):
    """The production SpeechAnalyzer state machine (its windowing and start/stop hangover) fed the
    confidences Silero gave this file once, so a parameter sweep never runs the model again."""

    def __init__(self, conf: np.ndarray, params: dict[str, float]) -> None:
        # the production defaults for any parameter not swept; the shared model is never run (cached scores)
        super().__init__(**{k: params[k] for k in ("threshold", "start_ms", "stop_ms", "min_dbfs") if k in params})
        self._conf = conf

    def process(self, pcm: bytes | np.ndarray) -> list[SpeechEvent]:
        windows = self._take_windows(pcm)
        scores = []
        for w in windows:
            if w.pcm is not None:
                i = int(round(w.t0 * SAMPLE_RATE / 1000)) // WIN
                scores.append(float(self._conf[i]) if i < len(self._conf) else 0.0)
        return self._decide(windows, scores)


def gated_windows(
    call: CallInputs, vad: SpeechAnalyzer, gate: GateAnalyzer, run: SystemRun
) -> Iterator[tuple[int, np.ndarray, list[GateEvent], float | None]]:
    """Each 32 ms window through the VAD and the gate as the live processors run them (the VAD's edges go
    into the gate); VAD starts and the gate's openings and closings are recorded in `run`.

    Yields (window index, window, the gate's events, the VAD segment's end if it came in this window).
    """
    for i in range(len(call.pcm) // WIN):
        win = call.pcm[i * WIN : (i + 1) * WIN]
        t1 = (i + 1) * WIN_MS
        events = gate.process_window(win)
        vad_end: float | None = None
        for e in vad.process(win):
            if e.kind == "start":
                run.vad_starts.append(t1)
                events += gate.vad_start(e.t_ms)
            else:
                events += gate.vad_end(e.t_ms)
                run.vad_ends.append(e.t_ms)
                vad_end = e.t_ms
        for g in events:
            if g.kind == "caller_start":
                run.gate_starts.append((t1, g.t_ms))
            elif g.kind == "caller_tentative":
                run.gate_tentatives.append((t1, g.t_ms))
            elif g.kind == "caller_end":
                run.gate_ends.append(g.t_ms)
        yield i, win, events, vad_end


def _speech_analyzer(conf: np.ndarray, params: dict[str, float]) -> SpeechAnalyzer:
    """A SpeechAnalyzer (the production state machine) whose Silero is replaced by cached confidences."""
    return _ReplayedSpeechAnalyzer(conf, params)
