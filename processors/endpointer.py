"""Semantic endpointer: when has the caller finished their turn? Three signals, one greedy decision.

1. Audio: Pipecat's bundled Smart-Turn v3 ONNX model (LocalSmartTurnAnalyzerV3's model, its attention
   softmaxes kept in float: 20 % faster), run once per pause on the turn's last 8 s, off the event loop;
   one session per process, one thread per inference.
2. Text: a transcript-completeness model (hashed word n-grams and word classes -> logistic regression,
   16 KB ONNX, trained by turn_eval/train_text.py on generated turns and everyday caller sentences; the
   processor runs it on one text thread per process, the event loop never runs a model). It
   knows that "my number is four one five" is not finished, which Smart-Turn, hearing a falling 8 kHz
   intonation, often thinks it is, and that "nine o'clock is fine" is.
3. Silence backstop that adapts to the caller: the 90th percentile of the pauses this caller made
   and then went on from, plus a margin, kept between `backstop_min_ms` and `backstop_max_ms`.

The combined probability p (a weighted mean of the two models, or the one that has spoken) sets how
much silence ends the turn: `final_min_ms` at p >= `p_high`, the backstop at p <= `p_low`, linear in
between, and up to `incomplete_ms` when p < `p_unfinished` (clearly unfinished). Greedy: once p >= `tentative_p` after `tentative_ms` of silence a *tentative* turn end is
emitted at once (the agent starts its LLM, holding the reply); if the caller goes on, `turn_cancelled`
follows; the *final* end releases the reply. A scrapped reply is never heard. While the gate holds a
tentative opening (the caller may have resumed, unconfirmed yet) no final end is made: the gate's
confirmation takes a few windows, and a pause that went on counting meanwhile cut turns short.

`EndpointAnalyzer` is plain Python (per 32 ms window; it asks for a Smart-Turn inference through
`pending_audio_request` and takes the answer with `set_audio_probability`, so whoever drives it decides
where the model runs). `SemanticEndpointer` is the FrameProcessor: it follows the gate
(processors/gate.py), runs Smart-Turn on a worker thread, reads transcripts from Pipecat's
TranscriptionFrame/InterimTranscriptionFrame and pushes UserTurnStartFrame, TurnEndFrame and
TurnCancelledFrame; with `finalize_stt` it also pushes a FinalizeTranscriptFrame upstream on each tentative
end, so the STT's final words come that long before the VAD's stop would have asked for them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import SAMPLE_RATE
from processors.frames import (
    CallerSpeechStartedFrame,
    FinalizeTranscriptFrame,
    TurnCancelledFrame,
    TurnEndFrame,
    UserTurnStartFrame,
)
from processors.gate import WIN, WIN_MS, GateAnalyzer
from processors.json_file import read_json

TEXT_MODEL_PATH = Path(__file__).parent / "data" / "turn_text.onnx"
TEXT_DIM = 4096
SMART_TURN_MAX_S = 8.0
PRE_SPEECH_MS = 500.0  # Pipecat's SmartTurnParams.pre_speech_ms


# --- transcript completeness ------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")
_DIGIT_WORDS = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six",
                                                  "seven", "eight", "nine"))} | {"oh": "0"}
_DIGITS = {str(d) for d in range(10)}
_OPEN_ENDINGS = {"and", "the", "to", "my", "is", "for", "with", "about", "because", "so", "um", "uh", "a", "an",
                 "of", "in", "at", "or", "but", "that", "if", "was", "i", "would", "like", "are", "on", "your",
                 "hmm", "well", "then", "when", "which", "who", "can", "could", "will", "it's", "i'm", "just"}


_CLASSES: dict[str, str] = {}
for _cls, _words in (
    ("det", "the a an my your our their his her this these those some any every each no another"),
    ("prep", "to for with about of in on at from by into onto over under after before between through during "
             "without than like until per via"),
    ("conj", "and or but because if so then although though while since unless whether"),
    ("wh", "what when where why how who which whose"),
    ("aux", "is are was were be been am do does did have has had will would can could should shall may might "
            "must it's i'm i'd i'll we're you're they're that's there's what's he's she's isn't wasn't don't "
            "doesn't didn't can't won't haven't"),
    ("pron", "i you we they he she it me him them us"),
    ("fill", "um uh er hmm well"),
    ("adv", "here there now today tonight tomorrow yesterday already too again yet anymore soon later instead"),
    ("yesno", "yes no yeah yep nope okay ok sure right correct please thanks thank"),
):
    for _w in _words.split():
        _CLASSES.setdefault(_w, _cls)


def word_class(tok: str) -> str:
    """A coarse class for a token: closed-class words by list, digits, and "w" for any other word."""
    if tok == "<s>":
        return "s"
    if tok.isdigit():
        return "num"
    return _CLASSES.get(tok, "w")


def text_tokens(text: str) -> list[str]:
    """Lower-case words without punctuation (an STT's punctuation is not trusted); digits one per token."""
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w.isdigit():
            out.extend(list(w))
        else:
            out.append(_DIGIT_WORDS.get(w, w))
    return out


def text_feature_names(text: str) -> list[str]:
    """The sparse features of a transcript: its last words, n-grams at its end, digit-group shape."""
    w = text_tokens(text)
    if not w:
        return ["empty"]
    pad = ["<s>", "<s>", "<s>"] + w
    feats = [f"w1={pad[-1]}", f"w2={pad[-2]}", f"w3={pad[-3]}", f"b={pad[-2]}_{pad[-1]}",
             f"t={pad[-3]}_{pad[-2]}_{pad[-1]}", f"f1={w[0]}", f"f2={'_'.join(w[:2])}",
             f"len={min(len(w), 12)}", "bias"]
    # Generalises to words never seen in training: does the turn stop on a function word or a filler?
    feats.append(f"endfunc={pad[-1] in _OPEN_ENDINGS}")
    # Word classes generalise further: "<aux> <content>" ("is fine") ends turns, "<prep> <det>" never does.
    c = [word_class(t) for t in pad[-3:]]
    feats += [f"c1={c[-1]}", f"c2={c[-2]}_{c[-1]}", f"c3={c[-3]}_{c[-2]}_{c[-1]}", f"c1w={c[-1]}_{min(len(w), 6)}",
              f"fc={word_class(w[0])}_{c[-1]}"]
    run = 0
    for tok in reversed(w):
        if tok not in _DIGITS:
            break
        run += 1
    total = sum(t in _DIGITS for t in w)
    feats += [f"drun={min(run, 12)}", f"dtot={min(total, 16)}", f"drun_mod={run % 3 if run else -1}"]
    if run:
        feats.append(f"dprev={pad[-1 - run] if run < len(w) else '<s>'}")
    return feats


def text_features(texts: list[str], dim: int = TEXT_DIM) -> np.ndarray:
    """Hashed bag of features (crc32 mod dim), float32 [len(texts), dim]."""
    x = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for f in text_feature_names(t):
            x[i, zlib.crc32(f.encode()) % dim] += 1.0
    return x


class TextCompletenessModel:
    """P(the transcript is a complete turn), from the shipped ONNX model (onnxruntime, CPU, < 1 ms)."""

    def __init__(self, path: str | Path = TEXT_MODEL_PATH) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text completeness model not found: {path} (train it: python -m turn_eval.train_text)")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        self._cache: dict[str, float] = {}

    def probability(self, text: str) -> float:
        key = " ".join(text_tokens(text))
        p = self._cache.get(key)
        if p is None:
            out = self._session.run(None, {"features": text_features([text])})[0]
            p = float(np.ravel(out)[0])
            if len(self._cache) >= 4096:  # bounded: a long call's transcripts never grow it without end
                self._cache.clear()
            self._cache[key] = p
        return p


@lru_cache(maxsize=1)
def shared_text_model() -> TextCompletenessModel:
    return TextCompletenessModel()


@lru_cache(maxsize=1)
def _text_executor() -> ThreadPoolExecutor:
    """The process's one text-model thread (the model's answer cache is used by this thread only)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-text")


# --- Smart-Turn ------------------------------------------------------------------------------------


class SmartTurnModel:
    """Pipecat's bundled Smart-Turn v3 model, fed 8 kHz audio.

    Same inputs as LocalSmartTurnAnalyzerV3._predict_endpoint (16 kHz HQ resample, left-padded to 8 s,
    Whisper log-mel), but the spectrogram frames that lie wholly in the zero padding (identical after
    normalisation) are computed once: a 2 s turn costs a quarter of the STFT work (features equal to
    Pipecat's to float rounding; tests/processors/test_endpointer.py checks it). With `float_softmax` (what
    callgate runs) the graph's attention softmaxes run in float (`smart_turn_graph`); without it the session
    is Pipecat's own, which the eval's Pipecat baseline uses.
    """

    def __init__(self, threads: int = 1, *, float_softmax: bool = True) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()  # LocalSmartTurnAnalyzerV3's options
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.float_softmax = float_softmax
        self._session = ort.InferenceSession(smart_turn_graph(float_softmax), sess_options=so,
                                             providers=["CPUExecutionProvider"])

    def probability(self, pcm: np.ndarray) -> float:
        """P(complete) for int16 8 kHz audio of the turn so far (the model keeps the last 8 s)."""
        feats = smart_turn_features(np.asarray(pcm, dtype=np.float32) / 32768.0)
        out = self._session.run(["logits"], {"input_features": feats[None]})[0]
        return float(np.ravel(out)[0])


SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"  # what LocalSmartTurnAnalyzerV3 loads


def smart_turn_graph(float_softmax: bool) -> bytes:
    """Pipecat's bundled Smart-Turn model, optionally with its attention softmaxes kept out of int8.

    Why: the model is int8 QDQ, and ONNX Runtime fuses each DequantizeLinear -> Softmax -> QuantizeLinear
    into a QLinearSoftmax, whose kernel took 13.5 of the 56 ms of an inference here (6 x 400 x 400 scores
    per layer); the float Softmax between the same Q/DQ pair, which is what the graph itself specifies,
    takes 2 ms. A node that yields a graph output is never fused, so each such softmax's output is also
    declared an output of the graph (never fetched). The matrix products stay fused int8. The output moves
    by the rounding the lookup table made (median |dp| 0.013 over the dev sets' pauses); eval-turns prints
    the same figures with either session (turn_eval/RESULTS.md).
    """
    from importlib import resources

    data = resources.files("pipecat.audio.turn.smart_turn.data").joinpath(SMART_TURN_FILE).read_bytes()
    if not float_softmax:
        return data
    import onnx

    model = onnx.load_from_string(data)
    made_by = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        src = made_by.get(node.input[0]) if node.input else None
        if node.op_type == "Softmax" and src is not None and src.op_type == "DequantizeLinear":
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


_SMART_TURN: SmartTurnModel | None = None
_SMART_TURN_LOCK = threading.Lock()


def shared_smart_turn() -> SmartTurnModel:
    """The process's one Smart-Turn session (ONNX Runtime sessions are thread-safe), loaded on first use.

    Call it off the event loop (loading and patching the graph take ~0.8 s; the server's warm-up does it).
    It also pins BLAS to one thread for the process: the log-mel product is the only BLAS call on this
    path, and an unpinned OpenBLAS spreads that 80x201
    by 201x800 product over every core, 1.6 -> 14.7 ms wall here, and worse with many calls at once; a
    server runs its calls side by side, so one thread per call is what scales.
    """
    global _SMART_TURN
    with _SMART_TURN_LOCK:
        if _SMART_TURN is None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
            _SMART_TURN = SmartTurnModel(threads=1)
        return _SMART_TURN


def _smart_turn_probability(pcm: np.ndarray) -> float:
    return shared_smart_turn().probability(pcm)


ST_RATE, ST_SAMPLES, ST_FFT, ST_HOP = 16000, 16000 * 8, 400, 160


def smart_turn_features(audio_8k: np.ndarray) -> np.ndarray:
    """Smart-Turn v3's input [80, 800] for float 8 kHz audio: Pipecat's resample, padding and log-mel."""
    import soxr
    from numpy.lib.stride_tricks import sliding_window_view
    from pipecat.audio.turn.smart_turn import _whisper_features as wf

    x = soxr.resample(audio_8k, SAMPLE_RATE, ST_RATE, quality="HQ") if len(audio_8k) else np.zeros(0, np.float32)
    x = np.asarray(x[-ST_SAMPLES:], dtype=np.float32)
    lead = ST_SAMPLES - len(x)
    x = np.pad(x, (lead, 0))
    x = (x - x.mean()) / np.sqrt(x.var() + wf._NORM_VARIANCE_EPS)
    pad = ST_FFT // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    frames = sliding_window_view(padded, ST_FFT)[::ST_HOP]  # 801 frames; frame k: padded[k*hop : k*hop+fft]
    # frames inside padded[: lead + pad] see only the (normalised) zero padding, reflected or not: all alike
    n_const = (lead - pad) // ST_HOP + 1 if lead > pad + ST_FFT else 0
    first = max(n_const - 1, 0)
    spec = np.abs(np.fft.rfft(frames[first:-1] * wf._HANN_WINDOW, axis=-1)) ** 2  # the last frame is dropped
    log_spec = np.log10(np.maximum(wf._MEL_FLOOR, wf._MEL_FILTERS.T @ spec.T))
    if n_const > 1:
        log_spec = np.concatenate([np.repeat(log_spec[:, :1], n_const - 1, axis=1), log_spec], axis=1)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# --- the decision ----------------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


@dataclass
class EndpointerParams:
    """The endpointer's numbers (ms of caller silence, probabilities in [0, 1])."""

    smart_turn_after_ms: float = 96.0  # silence before Smart-Turn runs (once per pause)
    audio_weight: float = 0.5  # p = sigmoid(a * logit(p_audio) + b * logit(p_text) + c), a = this
    text_weight: float = 1.0  # b
    combine_bias: float = 0.0  # c
    p_high: float = 0.8  # at or above: final end after final_min_ms
    p_low: float = 0.2  # at or below: only the backstop ends the turn
    p_unfinished: float = 0.1  # below: clearly unfinished, wait up to incomplete_ms
    final_min_ms: float = 200.0
    tentative_p: float = 0.6  # greedy: tentative end at this p ...
    tentative_ms: float = 128.0  # ... after this much silence
    backstop_default_ms: float = 1200.0  # until the caller has made min_pauses pauses
    backstop_min_ms: float = 700.0
    backstop_max_ms: float = 2000.0
    incomplete_ms: float = 2000.0  # silence that ends a turn the models call clearly unfinished (p -> 0)
    backstop_margin_ms: float = 250.0
    backstop_quantile: float = 0.9
    min_pauses: int = 2
    min_pause_ms: float = 150.0  # shorter silences inside speech are not pauses
    rejoin_ms: float = 500.0  # caller speaks again this soon after a final end: that was a pause, learn it
    text_wait_ms: float = 600.0  # no transcript of the latest speech yet: wait this long for one

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EndpointerParams:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown endpointer parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{k: int(v) if k == "min_pauses" else float(v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EndpointEvent:
    kind: Literal["user_turn_start", "turn_end", "turn_cancelled"]
    t_ms: float
    source: str = ""
    confidence: float = 0.0
    tentative: bool = False
    silence_ms: float = 0.0
    after_ms: float = 0.0


@dataclass(frozen=True)
class AudioRequest:
    """Run Smart-Turn on `pcm` (the turn so far) and hand the result back tagged with `pause_id`."""

    pause_id: int
    t_ms: float
    pcm: np.ndarray


class EndpointAnalyzer:
    """Caller-speech flags per window + transcripts + model answers -> turn events. No asyncio.

    States: idle (no turn), turn (caller speaking or pausing), tentative (greedy end emitted), and back
    to idle after the final end.
    """

    def __init__(
        self,
        params: EndpointerParams | None = None,
        text_model: TextCompletenessModel | None = None,
        use_text: bool = True,
    ) -> None:
        self.p = params or EndpointerParams()
        self._text_model = text_model if text_model is not None or not use_text else shared_text_model()
        self.state: Literal["idle", "turn", "tentative"] = "idle"
        self._t_ms = 0.0
        self._last_voice = 0.0
        self._turn_start = 0.0
        self._tentative_at = 0.0
        self._final_at = -1e9
        self._pause_id = 0
        self._requested = False
        self._p_audio: float | None = None
        self._p_text: float | None = None
        self._text = ""
        self._text_at = -1.0  # audio time the transcript last changed
        self.pauses: deque[float] = deque(maxlen=50)
        self._audio: deque[np.ndarray] = deque(maxlen=int((SMART_TURN_MAX_S + 1) * 1000 / WIN_MS))
        self._audio_t0 = 0.0  # audio time of the first window in _audio
        self.pending_audio_request: AudioRequest | None = None

    # --- inputs ------------------------------------------------------------------------------------

    @property
    def text_model(self) -> TextCompletenessModel | None:
        return self._text_model

    def set_transcript(self, text: str, p_text: float | None = None) -> None:
        """The STT's latest words for the current turn (interim or final; whole turn so far).

        `p_text`: the text model's answer on them where the caller ran it (the processor does, off the
        event loop); otherwise the model runs here.
        """
        self._text, self._text_at = text, self._t_ms
        if not text.strip():
            p_text = None
        elif p_text is None and self._text_model is not None:
            p_text = self._text_model.probability(text)
        self._p_text = p_text

    def set_audio_probability(self, pause_id: int, p: float) -> None:
        """Smart-Turn's answer for a pause; ignored if the caller already spoke again."""
        if pause_id == self._pause_id:
            self._p_audio = p

    @property
    def t_ms(self) -> float:
        """Audio time of the next window's start."""
        return self._t_ms

    @property
    def text(self) -> str:
        return self._text

    def backstop_ms(self) -> float:
        """Silence that ends a turn whatever the models say: adapted to this caller's pauses."""
        if len(self.pauses) < self.p.min_pauses:
            return self.p.backstop_default_ms
        q = float(np.quantile(np.asarray(self.pauses), self.p.backstop_quantile))
        return float(np.clip(q + self.p.backstop_margin_ms, self.p.backstop_min_ms, self.p.backstop_max_ms))

    def _fresh_text(self) -> float | None:
        """P(complete) from the transcript, if it was updated after the caller's latest speech."""
        return self._p_text if self._text_at >= self._last_voice else None

    def probability(self) -> float | None:
        """The combined completeness probability for the current pause (None: no model has spoken)."""
        pa, pt = self._p_audio, self._fresh_text()
        if pa is None and pt is None:
            return None
        z = self.p.combine_bias
        if pa is not None:
            z += self.p.audio_weight * _logit(pa)
        if pt is not None:
            z += self.p.text_weight * _logit(pt)
        return float(1.0 / (1.0 + np.exp(-z)))

    def required_silence_ms(self, p: float | None) -> float:
        back = self.backstop_ms()
        if p is None:
            return back
        if p >= self.p.p_low:
            frac = float(np.clip((self.p.p_high - p) / max(self.p.p_high - self.p.p_low, 1e-6), 0.0, 1.0))
            need = self.p.final_min_ms + frac * max(back - self.p.final_min_ms, 0.0)
        elif p >= self.p.p_unfinished:  # unsure (words the model does not know): the caller's backstop
            need = back
        else:  # clearly unfinished ("my number is four one five"): up to incomplete_ms as p -> 0
            frac = (self.p.p_unfinished - p) / max(self.p.p_unfinished, 1e-6)
            need = back + frac * max(self.p.incomplete_ms - back, 0.0)
        if self._text_model is not None and self._fresh_text() is None:
            need = max(need, min(self.p.text_wait_ms, back))  # the words may still change the verdict
        return need

    def _source(self) -> str:
        names = [n for n, v in (("smart_turn", self._p_audio), ("text", self._fresh_text())) if v is not None]
        return "+".join(names) or "silence"

    def process_window(
        self, x: np.ndarray, caller: bool, caller_start_ms: float | None = None, hold: bool = False
    ) -> list[EndpointEvent]:
        """One 32 ms window: `caller` = the gate counted it as the caller's speech.

        `caller_start_ms`: the gate's (backdated) start of the caller speech that this window opened.
        `hold`: the gate has opened tentatively (the caller may have resumed, unconfirmed yet): no final
        end now; the pause goes on counting, so a revoked opening ends the turn at once if it is due.
        """
        t0 = self._t_ms
        self._t_ms += WIN_MS
        t1 = self._t_ms
        if not self._audio:
            self._audio_t0 = t0
        elif len(self._audio) == self._audio.maxlen:
            self._audio_t0 += WIN_MS
        self._audio.append(np.asarray(x, dtype=np.int16))
        events: list[EndpointEvent] = []
        if caller:
            silence = t0 - self._last_voice
            if self.state == "idle":
                if t0 - self._final_at <= self.p.rejoin_ms and silence >= self.p.min_pause_ms:
                    self.pauses.append(silence)  # we cut the caller off: remember how long they pause
                start = caller_start_ms if caller_start_ms is not None else t0
                self.state, self._turn_start = "turn", start
                self._text, self._p_text = "", None
                events.append(EndpointEvent("user_turn_start", start))
            else:
                if silence >= self.p.min_pause_ms:
                    self.pauses.append(silence)
                if self.state == "tentative":
                    self.state = "turn"
                    events.append(EndpointEvent("turn_cancelled", t0, after_ms=t0 - self._tentative_at))
            self._last_voice = t1
            self._pause_id += 1
            self._requested = False
            self._p_audio = None
            self.pending_audio_request = None
            return events
        if self.state == "idle":
            return events
        silence = t1 - self._last_voice
        if not self._requested and silence >= self.p.smart_turn_after_ms:
            self._requested = True
            self.pending_audio_request = AudioRequest(self._pause_id, t1, self._turn_audio())
        p = self.probability()
        if self.state == "turn" and p is not None and p >= self.p.tentative_p and silence >= self.p.tentative_ms:
            self.state, self._tentative_at = "tentative", t1
            events.append(EndpointEvent("turn_end", t1, self._source(), p, True, silence))
        if not hold and silence >= self.required_silence_ms(p):
            source = self._source() if p is not None and p >= self.p.p_low else "silence"
            events.append(EndpointEvent("turn_end", t1, source, p if p is not None else 0.0, False, silence))
            self.state, self._final_at = "idle", t1
            self.pending_audio_request = None
        return events

    def _turn_audio(self) -> np.ndarray:
        start = self._turn_start - PRE_SPEECH_MS
        skip = int(max(0.0, start - self._audio_t0) // WIN_MS)
        parts = list(self._audio)[skip:]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class SemanticEndpointer(FrameProcessor):
    """Follows the gate: pushes UserTurnStartFrame, TurnEndFrame (tentative / final), TurnCancelledFrame.

    The gate analyzer is shared (`gate`), so this processor reads its per-window caller flag rather
    than re-deciding; put it right after BackgroundSpeechGate. Smart-Turn runs on a worker thread; its
    answer is applied to the window after it arrives (the pause is still the same one, or it is dropped).
    """

    def __init__(
        self,
        gate: GateAnalyzer,
        analyzer: EndpointAnalyzer | None = None,
        smart_turn: SmartTurnModel | None = None,
        finalize_stt: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.finalize_stt = finalize_stt
        self.analyzer = analyzer or EndpointAnalyzer()
        self._smart_turn = smart_turn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        self._pending = np.zeros(0, dtype=np.int16)
        self._caller_start: float | None = None
        self._inflight: asyncio.Future | None = None
        self._transcript_final = ""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, CallerSpeechStartedFrame):
            self._caller_start = frame.t_ms
        elif isinstance(frame, TranscriptionFrame):
            self._transcript_final = (self._transcript_final + " " + frame.text).strip()
            self._set_transcript(self._transcript_final)
        elif isinstance(frame, InterimTranscriptionFrame):
            self._set_transcript((self._transcript_final + " " + frame.text).strip())
        elif isinstance(frame, InputAudioRawFrame):
            await self._on_audio(frame.audio)

    def _set_transcript(self, text: str) -> None:
        # The text model (~0.05 ms) runs on the process's text thread, never on the event loop. Not awaited:
        # the frame queue never waits on it and an interruption cancelling this task cannot lose the words;
        # one FIFO thread hands the answers back in the order the transcripts came.
        model = self.analyzer.text_model
        if model is None or not text.strip():
            self.analyzer.set_transcript(text, None)
            return
        fut = asyncio.get_running_loop().run_in_executor(_text_executor(), model.probability, text)
        fut.add_done_callback(lambda f, text=text: self._on_text_probability(text, f))

    def _on_text_probability(self, text: str, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:  # this transcript then leaves the decision to audio and silence
            logger.warning(f"text completeness model failed: {fut.exception()!r}")
            return
        self.analyzer.set_transcript(text, fut.result())

    async def _on_audio(self, audio: bytes) -> None:
        self._pending = np.concatenate([self._pending, np.frombuffer(audio, dtype=np.int16)])
        n = len(self._pending) // WIN
        for i in range(n):
            win = self._pending[i * WIN : (i + 1) * WIN]
            caller = self.gate.window_is_caller(self.analyzer.t_ms)
            for e in self.analyzer.process_window(win, caller, self._caller_start, hold=self.gate.tentative_heard):
                await self._push_event(e)
            self._caller_start = None if caller else self._caller_start
            req = self.analyzer.pending_audio_request
            if req is not None:
                self.analyzer.pending_audio_request = None
                self._start_inference(req)
        self._pending = self._pending[n * WIN :]

    def _start_inference(self, req: AudioRequest) -> None:
        # the shared model loads on the worker thread, never on the event loop
        infer = self._smart_turn.probability if self._smart_turn is not None else _smart_turn_probability
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, infer, req.pcm)
        fut.add_done_callback(lambda f, pid=req.pause_id: self._on_inference(pid, f))

    def _on_inference(self, pause_id: int, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.analyzer.set_audio_probability(pause_id, fut.result())

    async def _push_event(self, e: EndpointEvent) -> None:
        if e.kind == "user_turn_start":
            self._transcript_final = ""
            await self.push_frame(UserTurnStartFrame(t_ms=e.t_ms))
        elif e.kind == "turn_cancelled":
            await self.push_frame(TurnCancelledFrame(t_ms=e.t_ms, after_ms=e.after_ms))
        else:
            await self.push_frame(
                TurnEndFrame(
                    t_ms=e.t_ms,
                    source=e.source,
                    confidence=e.confidence,
                    tentative=e.tentative,
                    silence_ms=e.silence_ms,
                    text=self.analyzer.text,
                )
            )
            if not e.tentative:
                self._transcript_final = ""
            elif self.finalize_stt:
                await self.push_frame(FinalizeTranscriptFrame(t_ms=e.t_ms), FrameDirection.UPSTREAM)

    async def cleanup(self) -> None:
        await super().cleanup()
        self._executor.shutdown(wait=False)


# --- presets ---------------------------------------------------------------------------------------

LISTEN_PRESETS_PATH = Path(__file__).resolve().parent.parent / "pipelines" / "presets" / "listen.json"


@dataclass
class ListenPreset:
    """One workflow's listening parameters: the VAD under the gate, the gate, the endpointer."""

    vad: dict[str, float]
    gate: Any  # GateParams
    endpointer: EndpointerParams


def load_listen_preset(workflow: str = "agent", path: str | Path | None = None) -> ListenPreset:
    """The workflow's preset from pipelines/presets/listen.json (or `path`); ValueError names the problem."""
    from processors.gate import GateParams

    path = Path(path) if path is not None else LISTEN_PRESETS_PATH
    doc = read_json(path, "listen presets file")
    workflows = doc.get("workflows", {}) if isinstance(doc, dict) else {}
    if workflow not in workflows:
        raise ValueError(f"{path}: no listen preset for workflow {workflow!r} (have: {', '.join(workflows) or 'none'})")
    w = workflows[workflow]
    vad = {k: float(v) for k, v in w.get("vad", {}).items()}
    unknown = set(vad) - {"threshold", "start_ms", "stop_ms", "min_dbfs"}
    if unknown:
        raise ValueError(f"{path}: unknown vad parameter(s) {', '.join(sorted(unknown))}")
    return ListenPreset(vad, GateParams.from_dict(w.get("gate", {})), EndpointerParams.from_dict(w.get("endpointer", {})))
