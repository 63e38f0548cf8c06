"""A real voice that speaks briefly and waits: what does the AMD call it?

Every real recording here is a machine, so a model fitted on them can learn "a natural voice is a
machine" and still score well on every real-greeting figure (issue 11). This probe makes that visible:
each real greeting is cut `cut_ms` after its onset (the live VAD's first speech start) and followed by
quiet line, which gives a pickup-shaped call with a real voice ("Hi, this is ..." and then nothing).
The first second of a greeting is genuinely ambiguous, so this is not a ground truth; it is a
comparison: a change that calls many more of these machine than the shipped model has learned voice
identity, not what a greeting does.

    python -m amd_model.tools.real_voice_probe [DIR] [--cut-ms 700] [--model M] [--workflow W] [--presets P]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amd_model.tools.asterisk_baseline import quiet_line
from amd_model.tools.evaluation import OfflineSpeechDetector, build_trace, read_real_greetings
from amd_model.traces import replay_trace
from callgate.audio import SAMPLE_RATE, load_audio
from processors.amd_decision import DetectorConfig, load_presets

WAIT_MS = 8000  # silence after the cut: longer than any preset's human decision needs


def cut_after_onset(pcm: np.ndarray, onset_ms: float, cut_ms: int) -> np.ndarray:
    """The recording up to `cut_ms` after the speech onset, then WAIT_MS of quiet line: a pickup's shape."""
    cut = int((onset_ms + cut_ms) * SAMPLE_RATE / 1000)
    return np.concatenate([pcm[:cut], quiet_line(WAIT_MS * SAMPLE_RATE // 1000, seed=1)])


def probe(
    directory: Path, model: Any, detectors: Sequence[DetectorConfig], cut_ms: int = 700
) -> dict[str, Any]:
    """Verdict counts and the machine verdicts' median time after onset, over the cut greetings."""
    vad = OfflineSpeechDetector()
    counts: Counter[str] = Counter()
    machine_ms: list[float] = []
    for call in read_real_greetings(directory):
        pcm = load_audio(call.path)
        start = next((t for ev, t, _ in vad.events(pcm) if ev == "start"), None)
        if start is None:
            counts["no_speech"] += 1
            continue
        pcm = cut_after_onset(pcm, start, cut_ms)
        trace = build_trace(call.file, model.classes, model.run(pcm), vad.events(pcm))
        v = replay_trace(trace, detectors)
        counts[v.label] += 1
        if v.label == "machine":
            machine_ms.append(v.t_ms - start)
    return {
        "n": sum(counts.values()),
        "verdicts": dict(counts),
        "machine_p50_ms": float(np.median(machine_ms)) if machine_ms else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from amd_model.runtime import AmdModel
    from amd_model.tools.corpus import DEV_GREETINGS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, nargs="?", default=DEV_GREETINGS, help="real greetings (WAV)")
    ap.add_argument("--cut-ms", type=int, default=700, help="speech kept after the onset")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--workflow", default="default")
    ap.add_argument("--presets", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        print(f"{args.dir}: not a directory")
        return 2
    rep = probe(args.dir, AmdModel(args.model), load_presets(args.presets)[args.workflow], args.cut_ms)
    p50 = rep["machine_p50_ms"]
    print(
        f"first {args.cut_ms} ms of each real greeting, then silence ({rep['n']} calls, preset "
        f"'{args.workflow}'): {dict(sorted(rep['verdicts'].items()))}; machine verdict p50 "
        + (f"{p50:.0f} ms after onset" if p50 is not None else "-")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
