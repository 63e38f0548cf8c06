"""Print the listening stack's CPU cost: the gate per 32 ms window, the endpointer per decision.

Why: the gate runs inline in Pipecat's input task (must stay far below 1 ms per window); each endpointer
decision runs Smart-Turn (on a worker thread) and the text model, and must stay under 60 ms.
Usage: python scripts/bench_listen.py [seconds] [inferences]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callgate import synth  # noqa: E402
from callgate.audio import to_int16  # noqa: E402
from processors.endpointer import EndpointAnalyzer, SmartTurnModel, TextCompletenessModel  # noqa: E402
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


def bench(secs: float = 60.0, inferences: int = 30) -> None:
    pcm = _speechlike(secs)
    wins = [pcm[i * WIN : (i + 1) * WIN] for i in range(len(pcm) // WIN)]

    gate = GateAnalyzer()
    gate.vad_start(0.0)
    costs = []
    cpu0 = time.process_time()
    for k, w in enumerate(wins):
        t0 = time.perf_counter()
        gate.process_window(w)
        if k % 40 == 39:  # VAD segments of ~1.3 s
            gate.vad_end(gate._t_ms)
            gate.vad_start(gate._t_ms)
        costs.append(time.perf_counter() - t0)
    _stats("gate (GateAnalyzer.process_window)", costs, (time.process_time() - cpu0) / len(wins) * 1e3, "32 ms window")

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
    for secs in (3.0, 8.0):
        turn = pcm[: int(secs * 8000)]
        for threads in (1, 2):
            smart = SmartTurnModel(threads=threads)
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
            print(f"endpointer decision (Smart-Turn v3 + text model), {secs:g} s of turn audio, {threads} thread(s): "
                  f"wall median {np.median(w):.1f} ms, p95 {np.percentile(w, 95):.1f} ms ({verdict} 60 ms); "
                  f"CPU median {np.median(c):.1f} ms, p95 {np.percentile(c, 95):.1f} ms over {inferences}")
    print("load average while measuring (2 cores shared):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    from loguru import logger

    logger.remove()
    bench(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
