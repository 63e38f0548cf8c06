"""The semantic endpointer: transcript completeness, Smart-Turn, adaptive backstop, greedy turn ends."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from callgate import synth
from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE, to_int16
from processors.endpointer import (
    EndpointAnalyzer,
    EndpointerParams,
    SemanticEndpointer,
    SmartTurnModel,
    TextCompletenessModel,
    _text_executor,
    load_listen_preset,
    shared_text_model,
    smart_turn_features,
    text_tokens,
)
from processors.frames import FinalizeTranscriptFrame, TurnCancelledFrame, TurnEndFrame, UserTurnStartFrame
from processors.gate import WIN, WIN_MS, BackgroundSpeechGate, GateAnalyzer
from processors.speech import SpeechDetector

SPEECH = np.full(WIN, 3000, dtype=np.int16)
QUIET = np.zeros(WIN, dtype=np.int16)


def test_text_model_knows_unfinished_numbers_and_lists() -> None:
    m = shared_text_model()
    assert m.probability("My number is four one five") < 0.2
    assert m.probability("I need eggs, milk,") < 0.2
    assert m.probability("I was wondering, um,") < 0.2
    assert m.probability("Yes, that's right.") > 0.7
    assert m.probability("My number is four one five five five five zero one two three") > 0.5


def test_text_model_knows_everyday_complete_replies_and_cut_offs() -> None:
    """Sentences of scripts/bench_agent_latency.py, never in its training text: complete ones score high,
    the same words cut where callers pause score low."""
    m = shared_text_model()
    for s in ("Nine o'clock is fine.", "In the morning please.", "It is with Blue Cross.", "Okay, thank you."):
        assert m.probability(s) > 0.8, s
    for s in ("I would like to", "My member number is on the", "Can you also check my", "It is with"):
        assert m.probability(s) < 0.1, s


def test_smart_turn_is_one_session_per_process_with_blas_on_one_thread() -> None:
    from threadpoolctl import threadpool_info

    from processors.endpointer import shared_smart_turn

    assert shared_smart_turn() is shared_smart_turn()
    # numpy's BLAS (the log-mel product's) is pinned; a BLAS that another library loads later in the
    # process (scipy's, by the measurement tools' tests) is not numpy's and not on this path
    blas = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_text_tokens_ignore_punctuation_and_split_digits() -> None:
    assert text_tokens("My number is 415, um...") == ["my", "number", "is", "4", "1", "5", "um"]
    assert text_tokens("Four oh five!") == ["4", "0", "5"]


def _drive(ep: EndpointAnalyzer, speech_windows: int, silence_windows: int, text: str | None = None,
           p_audio: float | None = None) -> list:
    events = []
    for _ in range(speech_windows):
        events += ep.process_window(SPEECH, True, None)
    for i in range(silence_windows):
        if text is not None and i == 3:  # the STT's words arrive ~100 ms into the pause
            ep.set_transcript(text)
        req = ep.pending_audio_request
        if req is not None and p_audio is not None:
            ep.pending_audio_request = None
            ep.set_audio_probability(req.pause_id, p_audio)
        events += ep.process_window(QUIET, False, None)
    return events


def test_complete_turn_ends_fast_with_a_tentative_end_first() -> None:
    ep = EndpointAnalyzer(EndpointerParams(final_min_ms=200, tentative_ms=128))
    ev = _drive(ep, 30, 40, text="Yes, that's right.", p_audio=0.9)
    kinds = [(e.kind, e.tentative) for e in ev]
    assert kinds[0] == ("user_turn_start", False)
    ends = [e for e in ev if e.kind == "turn_end"]
    assert [e.tentative for e in ends] == [True, False]
    final = ends[1]
    assert final.silence_ms <= 300
    assert final.source == "smart_turn+text" and final.confidence > 0.8
    assert ep.state == "idle"


def test_unfinished_transcript_holds_the_turn_through_a_long_pause() -> None:
    ep = EndpointAnalyzer(EndpointerParams(incomplete_ms=2000, backstop_default_ms=1200))
    ev = _drive(ep, 30, int(1500 / WIN_MS), text="My number is four one five", p_audio=0.95)
    assert not [e for e in ev if e.kind == "turn_end" and not e.tentative]
    # and the caller goes on: no new turn, and a tentative end (if any) is cancelled
    more = _drive(ep, 10, 0)
    assert not [e for e in more if e.kind == "user_turn_start"]
    if any(e.kind == "turn_end" for e in ev):
        assert [e.kind for e in more] == ["turn_cancelled"]


def test_greedy_end_is_cancelled_when_the_caller_goes_on() -> None:
    ep = EndpointAnalyzer(EndpointerParams(tentative_p=0.5, tentative_ms=96, final_min_ms=600, p_high=0.99))
    ev = _drive(ep, 20, 8, p_audio=0.9)
    assert [(e.kind, e.tentative) for e in ev][-1] == ("turn_end", True)
    more = _drive(ep, 5, 0)
    assert more[0].kind == "turn_cancelled" and more[0].after_ms > 0
    assert ep.state == "turn"


def test_a_tentative_gate_opening_holds_the_final_end_until_it_is_settled() -> None:
    """The gate has opened tentatively in the pause (the caller may have resumed, not yet confirmed): no
    final end meanwhile. Confirmed, the turn goes on; revoked, the overdue end comes at once."""
    def paused(hold_from: int, hold_windows: int) -> tuple[EndpointAnalyzer, list]:
        ep = EndpointAnalyzer(EndpointerParams(final_min_ms=200, tentative_ms=128), use_text=False)
        ev = [e for _ in range(20) for e in ep.process_window(SPEECH, True, None)]
        for i in range(60):
            ev += ep.process_window(QUIET, False, None, hold=hold_from <= i < hold_from + hold_windows)
        return ep, ev

    _ep, free = paused(0, 0)
    due = next(k for k, e in enumerate(free) if e.kind == "turn_end" and not e.tentative)
    held_ep, held = paused(3, 60)  # held from the 4th pause window to the end: no final end at all
    assert not [e for e in held if e.kind == "turn_end" and not e.tentative]
    assert [e.kind for e in held_ep.process_window(SPEECH, True, None)][:1] in ([], ["turn_cancelled"])
    assert held_ep.state == "turn"  # the caller went on: the same turn
    _ep, revoked = paused(3, 50)  # revoked after the 53rd pause window: the overdue end at once
    ends = [e.silence_ms for e in revoked if e.kind == "turn_end" and not e.tentative]
    assert free[due].silence_ms < 53 * WIN_MS and ends == [54 * WIN_MS]


def test_silence_backstop_follows_the_callers_own_pauses() -> None:
    p = EndpointerParams(backstop_default_ms=1200, backstop_min_ms=500, backstop_max_ms=2500, backstop_margin_ms=200,
                         min_pauses=2, incomplete_ms=3000)
    ep = EndpointAnalyzer(p, use_text=False)
    assert ep.backstop_ms() == 1200
    for _ in range(4):  # a caller who pauses ~1.5 s inside turns
        _drive(ep, 10, int(1500 / WIN_MS))
    assert 1600 <= ep.backstop_ms() <= 1800
    brisk = EndpointAnalyzer(p, use_text=False)
    for _ in range(4):
        _drive(brisk, 10, int(400 / WIN_MS))
    assert brisk.backstop_ms() == pytest.approx(max(500, 416 + 200), abs=40)
    # with no model at all, silence alone ends the turn at the backstop
    ev = _drive(brisk, 10, int(1500 / WIN_MS))
    end = [e for e in ev if e.kind == "turn_end"][0]
    assert end.source == "silence" and end.silence_ms == pytest.approx(brisk.backstop_ms(), abs=WIN_MS + 1)


def test_audio_request_carries_the_turn_and_a_stale_answer_is_ignored() -> None:
    ep = EndpointAnalyzer(use_text=False)
    _drive(ep, 25, 4)
    req = ep.pending_audio_request
    assert req is not None and len(req.pcm) >= 25 * WIN
    ep.process_window(SPEECH, True, None)  # the caller speaks again before the answer comes back
    ep.set_audio_probability(req.pause_id, 0.99)
    assert ep.probability() is None


def test_smart_turn_runs_the_bundled_model_on_8khz_audio_as_pipecat_does_or_with_float_softmax() -> None:
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    pipecat = LocalSmartTurnAnalyzerV3(sample_rate=SAMPLE_RATE)
    pipecat.set_sample_rate(SAMPLE_RATE)
    ours, pipecats = SmartTurnModel(), SmartTurnModel(float_softmax=False)
    moved = []
    for text in ("Hello, I would like to change my address please.", "My number is", "Yes, that's right."):
        pcm = to_int16(synth.telephone_channel(synth.speech(text)))
        ref = pipecat._predict_endpoint(pcm.astype(np.float32) / 32768.0)["probability"]
        assert pipecats.probability(pcm) == pytest.approx(ref, abs=1e-4)  # the baseline is Pipecat's session
        p = ours.probability(pcm)
        assert 0.0 <= p <= 1.0 and abs(p - ref) < 0.1
        moved.append(abs(p - ref))
    assert max(moved) > 1e-4  # the softmaxes really left the fused int8 kernel


def test_smart_turn_graph_declares_only_the_attention_softmaxes_as_extra_outputs() -> None:
    import onnx

    from processors.endpointer import smart_turn_graph

    plain, patched = onnx.load_from_string(smart_turn_graph(False)), onnx.load_from_string(smart_turn_graph(True))
    extra = [o.name for o in patched.graph.output][len(plain.graph.output):]
    softmax_out = {n.output[0]: n for n in patched.graph.node if n.op_type == "Softmax"}
    assert [o.name for o in plain.graph.output] == ["logits"] and len(extra) == 4  # one per encoder layer
    assert all(name in softmax_out for name in extra)
    assert len(softmax_out) == 5  # the attention-pooling softmax is float already and stays out


@pytest.mark.parametrize("secs", [0.3, 2.5, 7.95, 9.0])
def test_smart_turn_features_equal_pipecats_with_the_padding_frames_computed_once(secs: float) -> None:
    import soxr
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    audio = np.random.default_rng(3).standard_normal(int(secs * SAMPLE_RATE)).astype(np.float32) * 0.1
    x = soxr.resample(audio, SAMPLE_RATE, 16000, quality="HQ")
    x = x[-128000:] if len(x) > 128000 else np.pad(x, (128000 - len(x), 0))  # Pipecat's truncate / left pad
    ref = compute_whisper_log_mel_features(x, do_normalize=True)
    ours = smart_turn_features(audio)
    assert ours.shape == ref.shape == (80, 800)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_shipped_listen_preset_loads_and_bad_ones_are_named(tmp_path) -> None:
    preset = load_listen_preset("agent")
    assert preset.endpointer.final_min_ms > 0 and preset.gate.fallback_dbfs < 0
    with pytest.raises(ValueError, match="no listen preset"):
        load_listen_preset("nope")
    bad = tmp_path / "l.json"
    bad.write_text('{"workflows": {"agent": {"endpointer": {"final_min": 1}}}}')
    with pytest.raises(ValueError, match="unknown endpointer parameter"):
        load_listen_preset("agent", bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_listen_preset("agent", bad)


def _frames(pcm: np.ndarray) -> list:
    return [
        InputAudioRawFrame(audio=pcm[i : i + FRAME_SAMPLES].tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
        for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]


async def test_processors_end_a_spoken_turn_with_smart_turn_on_a_worker_thread() -> None:
    said = "Yes, that's right."
    x = synth.speech(said, voice="en-us+m3")
    pcm = to_int16(synth.telephone_channel(synth.concat(synth.silence(0.4), x / np.max(np.abs(x)) * 0.3,
                                                        synth.silence(2.5))))
    gate = GateAnalyzer()
    frames = _frames(pcm)
    # the STT's final transcript arrives mid-way through the trailing silence
    cut = (len(pcm) - int(2.2 * SAMPLE_RATE)) // FRAME_SAMPLES
    frames.insert(cut, TranscriptionFrame(text=said, user_id="caller", timestamp="t"))

    endpointer = SemanticEndpointer(gate)
    pipeline = Pipeline([SpeechDetector(), BackgroundSpeechGate(gate), endpointer])
    down, _ = await run_test(pipeline, frames_to_send=frames)
    starts = [f for f in down if isinstance(f, UserTurnStartFrame)]
    ends = [f for f in down if isinstance(f, TurnEndFrame) and not f.tentative]
    assert len(starts) == 1 and 300 <= starts[0].t_ms <= 700
    assert ends, "the turn never ended"
    speech_end = (0.4 * SAMPLE_RATE + len(x)) / SAMPLE_RATE * 1000
    assert speech_end - 200 <= ends[0].t_ms <= speech_end + 2500
    assert ends[0].to_event()["event"] == "turn_end"
    assert not [f for f in down if isinstance(f, TurnCancelledFrame)]


@pytest.mark.parametrize("finalize_stt", [True, False])
async def test_a_tentative_end_asks_the_stt_upstream_to_finalize_its_words(finalize_stt: bool) -> None:
    said = "Yes, that's right."
    x = synth.speech(said, voice="en-us+m3")
    pcm = to_int16(synth.telephone_channel(synth.concat(synth.silence(0.4), x / np.max(np.abs(x)) * 0.3,
                                                        synth.silence(1.5))))
    frames = _frames(pcm)
    # the STT's interim with every word arrives during the caller's silence (the VAD's frames lag the audio)
    cut = (len(pcm) - int(1.0 * SAMPLE_RATE)) // FRAME_SAMPLES
    # (audio frames are system frames: pace them so the transcript is not overtaken)
    frames[cut:cut] = [SleepFrame(0.5), InterimTranscriptionFrame(text=said, user_id="caller", timestamp="t"),
                       SleepFrame(0.5)]
    gate = GateAnalyzer()
    pipeline = Pipeline([SpeechDetector(), BackgroundSpeechGate(gate), SemanticEndpointer(gate, finalize_stt=finalize_stt)])
    down, up = await run_test(pipeline, frames_to_send=frames)
    tentative = [f for f in down if isinstance(f, TurnEndFrame) and f.tentative]
    finalize = [f for f in up if isinstance(f, FinalizeTranscriptFrame)]
    assert len(tentative) == 1
    if finalize_stt:  # once, at the tentative end: before the VAD's stop would have sent Pipecat's Finalize
        assert [f.t_ms for f in finalize] == [tentative[0].t_ms]
    else:
        assert not finalize


async def test_the_processor_runs_the_text_model_off_the_event_loop_and_uses_its_answer() -> None:
    import threading

    class Recording(TextCompletenessModel):
        threads: list[str] = []

        def probability(self, text: str) -> float:
            self.threads.append(threading.current_thread().name)
            return super().probability(text)

    model = Recording()
    gate = GateAnalyzer()
    endpointer = SemanticEndpointer(gate, EndpointAnalyzer(text_model=model))
    frames = [InterimTranscriptionFrame(text="my number is", user_id="caller", timestamp="t"),
              TranscriptionFrame(text="nine o'clock is fine", user_id="caller", timestamp="t")]
    await run_test(Pipeline([endpointer]), frames_to_send=frames)
    # the answers come back by callback, not awaited: let the text thread drain and the callbacks run
    await asyncio.get_running_loop().run_in_executor(_text_executor(), lambda: None)
    await asyncio.sleep(0)
    assert Recording.threads and all(name.startswith("turn-text") for name in Recording.threads)
    assert endpointer.analyzer._p_text == pytest.approx(TextCompletenessModel().probability("nine o'clock is fine"))
