"""Verdict latency of callgate's AMD and of Twilio's default AMD rules on the same recordings.

Why: README "Coming from Twilio AMD" compares the two. Twilio's algorithm is not published; its
documented parameters (speech longer than 2400 ms -> machine, 1200 ms of silence after speech -> human,
5000 ms of initial silence -> unknown) are simulated on Asterisk app_amd's state machine
(amd_model/tools/asterisk_baseline.py, TWILIO_DEFAULTS). callgate runs exactly what a live call runs: the
model's 100 ms steps, the live VAD's speech events, each workflow preset's decision layer.

Recordings: the real greetings in DEV_GREETINGS (index.csv; all answered by a machine) and a few
synthetic human pickups made here with espeak-ng (a short phrase, then silence). Printed per system:
AnsweredBy accuracy in Twilio's terms (machine_start / human), MachineDetectionDuration (verdict time
from answer) median and p90, and latency from the greeting's onset (machines) or from the end of the
pickup's first utterance (humans), over correct verdicts.

Usage: python scripts/bench_twilio_amd.py [DEV_GREETINGS_DIR]   (default CALLGATE_DEV_GREETINGS or ../shared/data/dev_greetings)
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from loguru import logger

from amd_model.runtime import AmdModel
from amd_model.tools.asterisk_baseline import TWILIO_DEFAULTS, run_asterisk_amd, twilio_answered_by
from amd_model.tools.corpus import DEV_GREETINGS
from amd_model.tools.evaluation import OfflineSpeechDetector, build_trace, pad_call
from amd_model.traces import replay_trace
from callgate.audio import load_audio, to_int16
from callgate.synth import concat, silence, speech, telephone_channel
from processors.amd_decision import load_presets

PICKUPS = [
    ("Hello?", "en-us+m3"),
    ("Hi, this is Dana.", "en-us+f2"),
    ("Yeah, hello?", "en-gb+m1"),
    ("Hello, who's calling?", "en-us+f4"),
    ("Hi.", "en-us+m7"),
    ("Hello, Mark speaking.", "en-gb+f3"),
    ("Yes?", "en-us+m2"),
    ("Hey, what's up?", "en-us+f1"),
]
PRESETS = ("voicemail_drop", "parallel_dial", "power_dial", "default")
TWILIO_LABEL = {"human": "human", "machine": "machine_start", "ivr": "machine_start"}


def recordings(greetings_dir: Path) -> list[tuple[str, str, np.ndarray]]:
    """(name, truth in Twilio terms, int16 PCM): the real greetings, then the synthetic pickups."""
    out = []
    with open(greetings_dir / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.append((row["file"], "machine_start", load_audio(greetings_dir / row["file"])))
    for i, (text, voice) in enumerate(PICKUPS):
        pcm = to_int16(telephone_channel(concat(silence(0.5 + 0.1 * i), speech(text, voice=voice), silence(6.0))))
        out.append((f"pickup-{i}", "human", pcm))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("greetings", nargs="?", type=Path, default=DEV_GREETINGS, help="folder of real greetings "
                    "with index.csv (default: CALLGATE_DEV_GREETINGS or ../shared/data/dev_greetings)")
    args = ap.parse_args()
    greetings_dir = args.greetings
    if not (greetings_dir / "index.csv").is_file():
        ap.error(f"{greetings_dir}: no index.csv of greetings there")
    logger.remove()
    model, vad, presets = AmdModel(), OfflineSpeechDetector(), load_presets()
    systems = ["twilio_rules", *PRESETS]
    rows: dict[str, list[tuple[str, str, float, float | None]]] = {s: [] for s in systems}
    t0 = time.perf_counter()
    calls = recordings(greetings_dir)
    for name, truth, pcm in calls:
        pcm = pad_call(pcm, 32_000)
        trace = build_trace(name, model.classes, model.run(pcm), vad.events(pcm))
        onset, utt_end = trace.speech_onset_ms, trace.first_utterance_end_ms
        anchor = utt_end if truth == "human" else onset
        ast = run_asterisk_amd(pcm, TWILIO_DEFAULTS)
        rows["twilio_rules"].append((truth, twilio_answered_by(ast), float(ast.t_ms), anchor))
        for preset in PRESETS:
            v = replay_trace(trace, presets[preset])
            rows[preset].append((truth, TWILIO_LABEL.get(v.label, "unknown"), v.t_ms, anchor))
    n_g = sum(1 for _, t, _ in calls if t == "machine_start")
    print(f"{n_g} real greetings ({greetings_dir}) + {len(calls) - n_g} synthetic espeak-ng pickups, "
          f"{time.perf_counter() - t0:.0f} s")
    print("MachineDetectionDuration = verdict time from answer; 'after onset' = from the greeting's first speech "
          "(VAD), 'after utterance' = from the end of the pickup's first utterance; medians over correct verdicts")
    head = f"{'system':<16}{'truth':<15}{'correct':>9}{'duration p50':>14}{'p90':>8}{'after onset/utt p50':>21}"
    print(head)
    print("-" * len(head))
    for system in systems:
        for truth in ("machine_start", "human"):
            sel = [r for r in rows[system] if r[0] == truth]
            ok = [r for r in sel if r[1] == truth]
            dur = [r[2] for r in ok]
            lat = [r[2] - r[3] for r in ok if r[3] is not None]
            p = (lambda xs, q: f"{np.percentile(xs, q):.0f}" if xs else "-")  # noqa: E731
            print(f"{system:<16}{truth:<15}{f'{len(ok)}/{len(sel)}':>9}{p(dur, 50):>14}{p(dur, 90):>8}{p(lat, 50):>21}")
        wrong = sorted({r[1] for r in rows[system] if r[1] != r[0]})
        if wrong:
            print(f"{'':<16}(wrong answers given: {', '.join(wrong)})")


if __name__ == "__main__":
    main()
