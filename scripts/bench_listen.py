"""Print the listening stack's CPU cost: the gate per 32 ms window, the endpointer per decision.

Why: the gate runs inline in Pipecat's input task (must stay far below 1 ms per window); each endpointer
decision runs Smart-Turn (on a worker thread) and the text model, and must stay under 60 ms; it is
measured with BLAS threads as the environment leaves them and as the server runs it (BLAS pinned).
Usage: python scripts/bench_listen.py [seconds] [inferences] [--gate-only] [--set DIR]
With --set DIR (a labelled turn set, e.g. turn_eval/data/real/test) it also prints the gate's figures
beside plain VAD on it (turn_eval.gate_eval): background segments that started a turn or a barge-in,
caller speech lost, turn starts the gate delayed by more than 100 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callgate import synth  # noqa: E402
from callgate.audio import to_int16  # noqa: E402
from processors.endpointer import (  # noqa: E402
    EndpointAnalyzer,
    SmartTurnModel,
    TextCompletenessModel,
    load_listen_preset,
    shared_smart_turn,
)
from processors.gate import WIN, GateAnalyzer  # noqa: E402


def _speechlike(secs: float) -> np.ndarray:
    x = synth.concat(
        synth.harmonic_vowel(140.0, secs / 2, vibrato_hz=4.0, vibrato_cents=40.0, jitter=0.02),
        synth.pink_noise(secs / 2, rms=0.03, seed=2),
    )
    return to_int16(synth.telephone_channel(x))


def _stats(name: str, costs_s: list[float], cpu_ms: float, unit: str) -> None:
    c = np.asarray(costs_s) * 1e3
    print(f"{name}: CPU {cpu_ms:.4f} ms per {unit}; wall mean {c.mean():.4f} ms, p99 {np.percentile(c, 99):.4f} ms, "
          f"max {c.max():.4f} ms over {len(c)}")


def bench_gate(wins: list[np.ndarray]) -> None:
    """The shipped preset's gate (every cue it uses), with a VAD segment edge every ~1.3 s."""
    gate = GateAnalyzer(load_listen_preset("agent").gate)
    gate.vad_start(0.0)
    costs = []
    cpu0 = time.process_time()
    for k, w in enumerate(wins):
        t0 = time.perf_counter()
        gate.process_window(w)
        if k % 40 == 39:  # VAD segments of ~1.3 s: the onset re-read is in the cost
            gate.vad_end(gate._t_ms)
            gate.vad_start(gate._t_ms - 96.0)
        costs.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(wins) * 1e3
    _stats("gate (GateAnalyzer, shipped agent preset)", costs, cpu, "32 ms window")
    print(f"  gate: {cpu:.4f} ms CPU per window ({'<' if cpu < 1 else '>='} 1 ms target)")
    # The dearest path: a closed gate deciding on every window of a voiced VAD segment (pitch per window,
    # the segment's cues against the caller's learned level and pitch, the background learner), with the
    # pitch cue on even where the shipped preset leaves it off (the level + pitch alternative).
    params = load_listen_preset("agent").gate
    if not params.pitch_weight:
        params = dataclasses.replace(params, pitch_weight=0.418, bg_learn_min_st=2.0)
    gate = GateAnalyzer(params)
    quiet = np.zeros(WIN, np.int16)
    for _ in range(20):
        gate.process_window(quiet)
    caller = to_int16(synth.telephone_channel(synth.harmonic_vowel(120.0, 3.0, vibrato_hz=4.0, vibrato_cents=40.0)))
    gate.vad_start(gate._t_ms)
    for i in range(len(caller) // WIN):
        gate.process_window(caller[i * WIN : (i + 1) * WIN])
    gate.vad_end(gate._t_ms)
    for _ in range(20):
        gate.process_window(quiet)
    tv = synth.telephone_channel(synth.harmonic_vowel(210.0, secs_tv := 6.0, vibrato_hz=5.0, vibrato_cents=60.0))
    tv = to_int16(tv * 0.2)  # ~14 dB under the caller: rejected, so every window is decided again
    gate.vad_start(gate._t_ms)
    costs = []
    cpu0 = time.process_time()
    n = int(secs_tv * 8000) // WIN
    for i in range(n):
        t0 = time.perf_counter()
        gate.process_window(tv[i * WIN : (i + 1) * WIN])
        costs.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / n * 1e3
    assert not gate.caller_open and gate._pitch_base is not None, "the bench did not exercise the pitch cue"
    _stats("gate, closed on a voiced background segment (pitch cue every window)", costs, cpu, "32 ms window")
    print(f"  gate worst path: {cpu:.4f} ms CPU per window ({'<' if cpu < 1 else '>='} 1 ms target)")


def gate_figures(folder: Path) -> None:
    from turn_eval.evaluate import load_set
    from turn_eval.gate_eval import evaluate_gate, format_report

    preset = load_listen_preset("agent")
    calls = load_set(folder)
    report = evaluate_gate(calls, preset.gate, preset.vad)
    print(f"\ngate vs plain VAD on {folder} ({len(calls)} calls, {report.summaries['gate'].turns} caller turns):")
    print(format_report(report))


def bench(secs: float = 60.0, inferences: int = 30, gate_only: bool = False) -> None:
    pcm = _speechlike(secs)
    wins = [pcm[i * WIN : (i + 1) * WIN] for i in range(len(pcm) // WIN)]
    bench_gate(wins)
    if gate_only:
        print("load average while measuring (2 cores shared):", " ".join(f"{v:.2f}" for v in os.getloadavg()))
        return

    ep = EndpointAnalyzer()
    costs = []
    cpu0 = time.process_time()
    for k, w in enumerate(wins):
        t0 = time.perf_counter()
        ep.process_window(w, caller=(k % 30) < 20, caller_start_ms=None)
        ep.pending_audio_request = None
        costs.append(time.perf_counter() - t0)
    _stats("endpointer decision logic (per window)", costs, (time.process_time() - cpu0) / len(wins) * 1e3,
           "32 ms window")

    text = TextCompletenessModel()
    sentences = [f"my number is four one five {' '.join(['two'] * (k % 7))}" for k in range(200)]
    costs = []
    cpu0 = time.process_time()
    for s in sentences:
        text._cache.clear()
        t0 = time.perf_counter()
        text.probability(s)
        costs.append(time.perf_counter() - t0)
    _stats("text completeness model (ONNX)", costs, (time.process_time() - cpu0) / len(sentences) * 1e3, "inference")

    # A whole decision as it runs live (SmartTurnModel.probability: resample, log-mel, the ONNX session, then
    # the text model), on a typical 2.5 s turn (+0.5 s before it) and on a full 8 s one. CPU = this
    # process's CPU time per decision (what a decision costs on this CPU whatever the load); wall as measured.
    # First with BLAS threads as the environment leaves them (OPENBLAS_NUM_THREADS unset: all cores), then
    # as the server runs it: shared_smart_turn(), one session per process, BLAS pinned to one thread.
    configs = [("env BLAS", lambda: SmartTurnModel(threads=1)), ("server", shared_smart_turn)]
    for label, make in configs:
        smart = make()
        for secs in (3.0, 8.0):
            turn = pcm[: int(secs * 8000)]
            smart.probability(turn)  # warm-up
            wall, cpu = [], []
            for _ in range(inferences):
                t0, c0 = time.perf_counter(), time.process_time()
                smart.probability(turn)
                text._cache.clear()
                text.probability(f"my number is {len(wall)}")
                wall.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
            w, c = np.asarray(wall), np.asarray(cpu)
            verdict = "<" if np.median(w) < 60 else ">="
            print(f"endpointer decision (Smart-Turn v3 + text model, {label}), {secs:g} s of turn audio: "
                  f"wall median {np.median(w):.1f} ms, p95 {np.percentile(w, 95):.1f} ms ({verdict} 60 ms); "
                  f"CPU median {np.median(c):.1f} ms, p95 {np.percentile(c, 95):.1f} ms over {inferences}")
    print("load average while measuring (2 cores shared):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    from loguru import logger

    logger.remove()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", nargs="?", type=float, default=60.0)
    ap.add_argument("inferences", nargs="?", type=int, default=30)
    ap.add_argument("--gate-only", action="store_true", help="only the gate's cost (and --set figures)")
    ap.add_argument("--set", type=Path, default=None, metavar="DIR", help="also print the gate's figures on DIR")
    a = ap.parse_args()
    bench(a.seconds, a.inferences, a.gate_only)
    if a.set is not None:
        gate_figures(a.set)
