"""Pick a speech-structure machine detector by cross-validation over the real greetings.

The model calls real greetings machine late (its probabilities on real voices stay at 0.6-0.9 where
synthetic greetings reach 0.95), and lowering a threshold alone also calls business pickups machine.
A greeting keeps talking where a pickup stops and waits, so the candidate detector is: p(machine)
>= T at every step of a window, while the caller is still speaking (and, optionally, still in the
first utterance). Each candidate is added to a workflow preset and scored by replaying traces
through the production `DecisionLayer`:

- cost: humans (and business pickups) newly called machine on the *tuning* human calls (a corpus's
  train + val splits); candidates over the caps are out;
- gain: the median machine verdict after onset on the real greetings, by k-fold cross-validation
  over the greeting files: the candidate is picked on k-1 folds and its latency read on the held-out
  fold, so no greeting is tuned and tested on at once.

Then the candidate picked on all greetings is scored on the corpus's test split. Detectors are
independent (first wins, list order breaks ties), so the new detector's first firing step is
replayed alone and merged with the preset's own verdict: the same verdict as replaying the whole
preset, at a fraction of the cost.

    python -m amd_model.tools.structure_cv --real-traces R --corpus-traces C [--max-humans 5 --max-business 2]

(`callgate eval DIR --traces OUT` writes the traces; the corpus traces need `split` in their truth or
the corpus's meta.jsonl.)
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amd_model.traces import Trace, load_traces, replay_trace
from processors.amd_decision import DetectorConfig, Verdict, load_presets


@dataclass(frozen=True)
class Candidate:
    threshold: float
    window_ms: int
    min_talk_ms: int
    first_utterance: bool

    def detector(self) -> DetectorConfig:
        return DetectorConfig(
            name="machine_talking",
            label="machine",
            classes=["machine"],
            threshold=self.threshold,
            window_ms=self.window_ms,
            mode="min",
            from_speech=True,
            min_talk_ms=self.min_talk_ms,
            max_utterances=1 if self.first_utterance else None,
        )


def grid() -> list[Candidate]:
    return [
        Candidate(t, w, talk, first)
        for t, w, talk, first in itertools.product(
            (0.65, 0.7, 0.75, 0.8, 0.85), (300, 500, 800), (200, 1000), (True, False)
        )
    ]


def merged(base: Verdict, new: Verdict | None) -> Verdict:
    """The preset's verdict with the new detector inserted after the human detectors."""
    if new is None or new.label != "machine" or new.detector == "none":
        return base
    if new.t_ms < base.t_ms or (new.t_ms == base.t_ms and base.label != "human"):
        return new
    return base


def _onset(t: Trace) -> float | None:
    return t.speech_onset_ms


@dataclass
class Scored:
    humans_lost: int
    business_lost: int
    latency: dict[str, float]  # greeting call_id -> machine verdict - onset (inf when not machine)


def score(cand: Candidate, base: dict[str, Verdict], real: Sequence[Trace], humans: Sequence[Trace]) -> Scored:
    det = [cand.detector()]
    lost = biz = 0
    for t in humans:
        v = merged(base[t.call_id], replay_trace(t, det))
        if base[t.call_id].label == "human" and v.label != "human":
            lost += 1
            biz += "business" in (t.subtype or "")
    lat = {}
    for t in real:
        v = merged(base[t.call_id], replay_trace(t, det))
        on = _onset(t)
        lat[t.call_id] = v.t_ms - on if v.label == "machine" and on is not None else float("inf")
    return Scored(lost, biz, lat)


def cv_folds(real: Sequence[Trace], k: int) -> list[list[str]]:
    """k folds of greeting ids (sorted, every k-th group); recordings that are the same audio under two
    names (the dev set has two such pairs: same speech events, same length) share a fold, so no
    greeting is tested on a fold whose tuning half holds its twin."""
    groups: dict[tuple, list[str]] = {}
    for t in sorted(real, key=lambda t: t.call_id):
        sig = (len(t.steps), *(round(e.t_ms) for e in t.speech[:8]))
        groups.setdefault(sig, []).append(t.call_id)
    ordered = sorted(groups.values())
    return [[n for g in ordered[j::k] for n in g] for j in range(k)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-traces", type=Path, required=True, help="traces of the real greetings")
    ap.add_argument("--corpus-traces", type=Path, required=True, help="traces of a corpus's calls")
    ap.add_argument("--meta", type=Path, default=None, help="the corpus's meta.jsonl (for split)")
    ap.add_argument("--workflow", default="default")
    ap.add_argument("--presets", type=Path, default=None, help="presets JSON without the new detector")
    ap.add_argument("--max-humans", type=int, default=5, help="humans newly called machine (tuning calls)")
    ap.add_argument("--max-business", type=int, default=2, help="business pickups newly called machine")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    for path in (args.real_traces, args.corpus_traces):
        if not path.exists():
            ap.error(f"{path}: no traces there (write them with `callgate eval DIR --traces OUT`)")

    preset = [d for d in load_presets(args.presets)[args.workflow] if d.name != "machine_talking"]
    real = load_traces(args.real_traces)
    corpus = load_traces(args.corpus_traces)
    if args.meta:
        splits = {}
        for line in args.meta.read_text().splitlines():
            m = json.loads(line)
            splits[Path(m["file"]).stem] = m.get("split")
        for t in corpus:
            t.truth.setdefault("split", splits.get(t.call_id))
    tune_h = [t for t in corpus if t.label == "human" and t.truth.get("split") in ("train", "val")]
    test = [t for t in corpus if t.truth.get("split") == "test"]
    base = {t.call_id: replay_trace(t, preset) for t in [*real, *tune_h, *test]}
    cands = grid()
    scored = {c: score(c, base, real, tune_h) for c in cands}
    ok = [c for c in cands if scored[c].humans_lost <= args.max_humans and scored[c].business_lost <= args.max_business]
    if not ok:
        print("no candidate within the cost caps")
        return 1

    def p50(c: Candidate, ids: Sequence[str]) -> float:
        return float(np.median([scored[c].latency[i] for i in ids]))

    names = sorted(t.call_id for t in real)
    folds = cv_folds(real, args.folds)
    cv: dict[str, float] = {}
    for j, held in enumerate(folds):
        train = [n for n in names if n not in held]
        best = min(ok, key=lambda c: (p50(c, train), -c.threshold))
        print(f"fold {j + 1}: {best} (tuning: {scored[best].humans_lost} humans, {scored[best].business_lost} business lost)")
        cv.update({n: scored[best].latency[n] for n in held})
    base_lat = [base[t.call_id].t_ms - t.speech_onset_ms for t in real if base[t.call_id].label == "machine"]
    print(
        f"real greetings, machine verdict after onset, median: preset {np.median(base_lat):.0f} ms -> "
        f"{args.folds}-fold CV {np.median(list(cv.values())):.0f} ms (n={len(cv)}, called machine "
        f"{sum(np.isfinite(list(cv.values())))})"
    )
    final = min(ok, key=lambda c: (p50(c, names), -c.threshold))
    print(f"picked on all greetings: {final} -> {json.dumps(final.detector().model_dump(exclude_defaults=True))}")
    det = [final.detector()]
    for name, vs in (("preset", [base[t.call_id] for t in test]), ("+ detector", [merged(base[t.call_id], replay_trace(t, det)) for t in test])):
        hum = [(t, v) for t, v in zip(test, vs, strict=True) if t.label == "human"]
        biz = [v.label == "human" for t, v in hum if "business" in (t.subtype or "")]
        acc = np.mean([v.label == t.label for t, v in zip(test, vs, strict=True)])
        print(
            f"test split ({len(test)} calls), {name}: accuracy {100 * acc:.1f} %, humans "
            f"{sum(v.label == 'human' for _, v in hum)}/{len(hum)}, business {sum(biz)}/{len(biz)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
