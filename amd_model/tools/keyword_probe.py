"""Words as a voice-independent cue, measured on the held-out folds (issue 11).

The fold nets fail on voices they never heard: a carrier voicemail in Asterisk's Allison voice is
called human, her IVR prompts machine. What such a greeting *says* does not depend on the voice, and
pocketsphinx (the offline STT the agent already ships, trained on real speech) recognises a real voice
reasonably well. This probe asks how far a fixed phrase list, written from what voicemail, IVR and
intercept recordings say in general (before any test call was read), would move the held-out figures.

Per test call: pocketsphinx decodes the audio from the VAD's first speech onset to onset + `--secs`,
once, with word times; a class's cue is "known" at the end of its first matching phrase. Then, per
fold, the fold net's verdicts through the production decision layer (preset `default`) are re-read
with one rule: when the cue is known before the net has decided, the cue's label is the verdict, at the
cue's time. Nothing is fitted on test calls; the phrase list is the only input.

    python -m amd_model.tools.keyword_probe /work/corpus/folds_s29 ../shared/data/dev_greetings
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# Phrases by the label they imply, in lower case, pocketsphinx's dictionary spelling. Written from the
# general shape of such recordings (carrier templates, "press one for", SIT intercept wording).
CUES: dict[str, tuple[str, ...]] = {
    "machine": (
        "leave a message", "leave your message", "leave me a message", "leave your name",
        "voicemail", "voice mail", "mailbox", "not available", "unavailable", "can't come to the phone",
        "after the tone", "after the beep", "at the tone", "get back to you", "call you back",
        "return your call", "record your message", "away from", "you have reached", "you've reached",
    ),
    "ivr": (
        "press one", "press two", "press zero", "please press", "para espanol", "option", "options",
        "menu", "extension", "directory", "please hold", "please stay on the line", "listen carefully",
        "your call is important", "will be answered", "next available",
    ),
    "carrier_intercept": (
        "not in service", "disconnected", "no longer in service", "has been changed",
        "check the number", "try your call again", "number you have dialed", "cannot be completed",
        "is not a working",
    ),
}


def find_cues(words: list[tuple[str, float]], cues: dict[str, tuple[str, ...]] = CUES) -> dict[str, float]:
    """`words`: (word, end ms) in order. Returns label -> the end time of its first matching phrase."""
    text, ends = "", []
    for w, end in words:
        w = re.sub(r"\(\d+\)$", "", w).replace("_", " ")
        if w.startswith("<") or w.startswith("["):
            continue
        text += (" " if text else "") + w
        ends.append((len(text), end))
    hits: dict[str, float] = {}
    for label, phrases in cues.items():
        best = None
        for ph in phrases:
            m = re.search(r"\b" + re.escape(ph) + r"\b", text)
            if m:
                t = next(e for pos, e in ends if pos >= m.end())
                best = t if best is None else min(best, t)
        if best is not None:
            hits[label] = best
    return hits


_RECOGNIZER: Any = None  # one pocketsphinx decoder per worker process


def _decode(job: tuple[str, str, float, float]) -> tuple[str, list[tuple[str, float]]]:
    """Worker: decode PATH from `t0_ms` for `secs`; returns the words with their end times (call ms)."""
    global _RECOGNIZER
    from callgate.audio import load_audio
    from pipelines.services.sphinx import PocketsphinxRecognizer

    key, path, t0_ms, secs = job
    _RECOGNIZER = _RECOGNIZER or PocketsphinxRecognizer()
    seg = load_audio(path)[int(t0_ms * 8) : int((t0_ms + secs * 1000) * 8)]
    if len(seg) < 800:
        return key, []
    return key, [(w, t0_ms + end) for w, end in _RECOGNIZER.words(seg.tobytes(), 8000)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("real_dir", type=Path)
    ap.add_argument("--secs", type=float, default=4.0, help="audio decoded from the first onset (s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fold-minutes", type=float, default=4.0)
    ap.add_argument("--fold-epochs", type=int, default=15)
    ap.add_argument("--only", nargs="*", help="fold slugs (default: all)")
    args = ap.parse_args(argv)
    if not (args.corpus / "meta.jsonl").is_file():
        ap.error(f"{args.corpus}: not a corpus (no meta.jsonl); build one with `callgate corpus build --real-pool all`")
    if not any(args.real_dir.glob("*.wav")):
        ap.error(f"{args.real_dir}: no .wav greetings to cross-validate (../shared/data/dev_greetings)")

    from tqdm import tqdm

    from amd_model.runtime import AmdModel
    from amd_model.tools import folds as F
    from amd_model.tools.evaluation import call_ms
    from amd_model.tools.train import CLASSES, load_meta
    from amd_model.traces import TRACE_VERSION
    from processors.amd_decision import Verdict, load_presets

    corpus, real = args.corpus, args.real_dir
    metas = load_meta(corpus)
    real_files = sorted(p.name for p in real.glob("*.wav"))
    folds = F.make_folds(metas, real_files, cv=5, max_test=400, groups=F.real_twins(real, real_files))
    if args.only:
        folds = [f for f in folds if f.slug in args.only]
    ref = AmdModel()
    det = load_presets()["default"]
    keys = {k for f in folds for k in f.test}
    items = F.prepare_items(corpus, metas, real, keys, ref, call_ms(det))

    cache_path = corpus / "folds" / f"keywords_{args.secs:g}s_trace{TRACE_VERSION}.json"
    cache: dict[str, list] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    jobs = []
    for k in sorted(keys - set(cache)):
        it = items[k]
        starts = [t for kind, t, _ in it.speech if kind == "start"]
        if not starts:
            cache[k] = []
            continue
        jobs.append((k, str(it.call.path), max(0.0, starts[0] - 300.0), args.secs))
    if jobs:
        with ProcessPoolExecutor(args.workers) as ex:
            for n, (k, words) in enumerate(
                tqdm(ex.map(_decode, jobs, chunksize=4), total=len(jobs), desc="pocketsphinx", unit="call"), 1
            ):
                cache[k] = words
                if n % 100 == 0:
                    cache_path.write_text(json.dumps(cache))
        cache_path.write_text(json.dumps(cache))

    cues = {k: find_cues([tuple(w) for w in cache[k]]) for k in keys}
    # Where the cues fire, by true label (all test calls once).
    by_label: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for k in keys:
        hits = cues[k]
        lab = items[k].call.label
        by_label[lab]["n"] += 1
        for h in hits:
            by_label[lab][h] += 1
    print(f"cue hits by true label, {len(keys)} test calls, onset + {args.secs:g} s decoded:")
    for lab, c in sorted(by_label.items()):
        print(f"  {lab:18s} n={c['n']:4d}  " + "  ".join(f"{h}:{c[h]}" for h in CUES))

    budget = F.Budget(minutes=args.fold_minutes, max_epochs=args.fold_epochs)
    print("\nfold: net alone -> net + cues (accuracy, machine p50 from onset); what the cues changed")
    p50 = lambda xs: f"{np.median(xs):.0f} ms" if xs else "-"  # noqa: E731
    pooled = {"n": 0, "ok0": 0, "ok1": 0, "lat0": [], "lat1": []}  # the real-greeting CV folds together
    for fold in folds:
        net, _ = F.train_fold(corpus, fold, budget)
        test = [items[k] for k in fold.test]
        probs = F.net_probs(net, [it.feats.astype(np.float32) for it in test])
        vs = F.verdicts(test, probs, CLASSES, det)
        ok0 = ok1 = 0
        changed: collections.Counter = collections.Counter()
        lat0, lat1 = [], []
        for k, it, v in zip(fold.test, test, vs, strict=True):
            hits = cues[k]
            first = min(hits.items(), key=lambda kv: kv[1]) if hits else None
            v1: Verdict = v
            if first is not None and first[1] < v.t_ms:
                v1 = Verdict(first[0], 1.0, first[1], "cue")
            lab = it.call.label
            ok0 += v.label == lab
            ok1 += v1.label == lab
            if v1 is not v and v1.label != v.label:
                changed[(lab, v.label, "->", v1.label)] += 1
            onset = next((t for kind, t, _ in it.speech if kind == "start"), None)
            if lab == "machine" and onset is not None:
                if v.label == "machine":
                    lat0.append(v.t_ms - onset)
                if v1.label == "machine":
                    lat1.append(v1.t_ms - onset)
        n = len(test)
        if fold.kind == "real_cv":
            for k, v in (("n", n), ("ok0", ok0), ("ok1", ok1), ("lat0", lat0), ("lat1", lat1)):
                pooled[k] += v
        print(f"{fold.name} ({n}): {ok0 / n:.1%}, {p50(lat0)} -> {ok1 / n:.1%}, {p50(lat1)}")
        for c, x in changed.most_common(8):
            print(f"    {x:3d} {' '.join(c)}")
        sys.stdout.flush()
    if pooled["n"]:
        n = pooled["n"]
        print(
            f"real greetings, {n} by CV: {pooled['ok0']}/{n}, {p50(pooled['lat0'])} -> "
            f"{pooled['ok1']}/{n}, {p50(pooled['lat1'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
