"""Refit only the shipped model's three linear heads, and measure what that buys and what it risks.

The 1.3.0 members' GRUs already carry the call; on real greetings their heads stay at p(machine)
0.6-0.9 for seconds, so real greetings wait for the late detectors (model card). Refitting the heads
(160 -> 5 per member) on the frozen GRU states is minutes of CPU, so it can be cross-validated over the
real greetings: a fold's heads never see its greetings, raw or inside corpus calls (twins share a
fold). Then the same heads run on real *human* voices (`amd_model.tools.real_humans`) and on the
greetings cut short (`real_voice_probe`'s pickup shape), where a model that learned "a natural voice
is a machine" shows itself.

    python -m amd_model.tools.head_refit CORPUS --humans DIR [--real-dir D] [--human-weight H [--human-folds K]] [--export OUT.onnx]

CORPUS is a corpus built with `--real-pool all` (folds_s29); DIR a folder from
`amd_model.tools.real_humans`. Every figure goes through the production decision layer (preset
`default`). `--export` writes the heads fitted on all greetings into a copy of the shipped graph.

Measured (amd_model/reports/head_refit.txt, model card): the refits that cut the greetings' machine
verdict from 1522 to 640-994 ms (CV) also call 1-2 more of 72 short real-voice pickups machine; the one
that leaves real people alone does not move the greetings. Training on the pickups too (`--human-weight
4`, their row then cross-validated by recording set) does not buy the trade back (806 ms, 70/72). On the
28-set pickups (`--human-folds 5`) it does: short real pickups 92.8 -> 98.0 % (CV by set), greetings 844
ms (CV), but the synthetic machines' median rises to 976 ms on test (line: 900). Not shipped.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from amd_model import features
from amd_model.runtime import AmdModel
from amd_model.tools.evaluation import (
    CallResult,
    LabelledCall,
    OfflineSpeechDetector,
    build_trace,
    metrics,
    pad_call,
)
from amd_model.tools.train import CLASSES, call_features
from amd_model.traces import replay_trace
from callgate.audio import load_audio
from processors.amd_decision import DetectorConfig, load_presets

HEAD = "model.nets.{k}.head.{what}"
SHIPPED = Path(__file__).parents[1] / "amd.onnx"


@dataclass
class Heads:
    """The members' heads: W (K, C, H), b (K, C)."""

    w: np.ndarray
    b: np.ndarray

    def probs(self, states: np.ndarray) -> np.ndarray:
        """(n, K*H) GRU states -> (n, C) member-averaged probabilities, as the graph computes them."""
        k, _c, h = self.w.shape
        s = states.astype(np.float32).reshape(-1, k, h)
        logits = np.einsum("nkh,kch->nkc", s, self.w) + self.b[None]
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(-1, keepdims=True)).mean(1)


def load_heads(path: Path) -> Heads:
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    k = 0
    ws, bs = [], []
    while HEAD.format(k=k, what="weight") in init:
        ws.append(init[HEAD.format(k=k, what="weight")])
        bs.append(init[HEAD.format(k=k, what="bias")])
        k += 1
    return Heads(np.stack(ws).astype(np.float32), np.stack(bs).astype(np.float32))


def export(src: Path, out: Path, heads: Heads, version: str, recipe: dict | None = None) -> None:
    """A copy of the graph (and its amd.json) with the heads replaced; `recipe` (how they were refitted) is
    kept in the json beside the version, under `head_refit`, with the version of the graph they came from."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    for t in m.graph.initializer:
        for k in range(heads.w.shape[0]):
            if t.name == HEAD.format(k=k, what="weight"):
                t.CopyFrom(numpy_helper.from_array(heads.w[k], t.name))
            elif t.name == HEAD.format(k=k, what="bias"):
                t.CopyFrom(numpy_helper.from_array(heads.b[k], t.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    meta = json.loads(src.with_suffix(".json").read_text())
    if recipe is not None:
        meta["head_refit"] = {"from_version": meta["version"], **recipe}
    meta["version"] = version
    meta["size_bytes"] = out.stat().st_size
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def gru_states(model: AmdModel, feats: Sequence[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """Per call, the (n_steps, K*H) state after each step (float16), batched along calls."""
    out: list[np.ndarray] = [np.zeros((0, model.hidden), np.float16)] * len(feats)
    order = np.argsort([f.shape[0] for f in feats])
    for lo in range(0, len(order), batch):
        idx = order[lo : lo + batch]
        n = max(feats[i].shape[0] for i in idx)
        x = np.zeros((len(idx), n, features.FRAMES_PER_STEP, features.N_MELS), np.float32)
        for j, i in enumerate(idx):
            x[j, : feats[i].shape[0]] = feats[i]
        st = np.zeros((1, len(idx), model.hidden), np.float32)
        rec = np.zeros((len(idx), n, model.hidden), np.float16)
        for t in range(n):
            _p, st = model.session.run(None, {"feats": x[:, t], "state": st})
            rec[:, t] = st[0]
        for j, i in enumerate(idx):
            out[i] = rec[j, : feats[i].shape[0]]
    return out


def fit_heads(
    states: Sequence[np.ndarray], targets: Sequence[np.ndarray], weights: Sequence[np.ndarray], start: Heads,
    *, l2: float = 1e-3, steps: int = 150, lr: float = 1e-2, seed: int = 0,
) -> Heads:
    """Weighted cross-entropy per member on its own probabilities, pulled towards the shipped heads."""
    import torch

    torch.manual_seed(seed)
    k, c, h = start.w.shape
    s = torch.from_numpy(np.concatenate(states).astype(np.float32)).reshape(-1, k, h)
    y = torch.from_numpy(np.concatenate(targets))
    w = torch.from_numpy(np.concatenate(weights).astype(np.float32))
    counts = np.bincount(y.numpy(), minlength=c).astype(np.float64)
    cw = torch.tensor((counts.sum() / (c * np.maximum(counts, 1))) ** 0.5, dtype=torch.float32)
    w0, b0 = torch.from_numpy(start.w), torch.from_numpy(start.b)
    wt, bt = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.Adam([wt, bt], lr=lr)
    wsum = (w * cw[y]).sum()
    for _ in range(steps):
        opt.zero_grad()
        logits = torch.einsum("nkh,kch->nkc", s, wt) + bt[None]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, c), y.repeat_interleave(k), reduction="none")
        loss = (ce.reshape(-1, k).mean(1) * w * cw[y]).sum() / wsum + l2 * ((wt - w0) ** 2).sum()
        loss.backward()
        opt.step()
    return Heads(wt.detach().numpy().copy(), bt.detach().numpy().copy())


@dataclass
class Clip:
    """A call whose states are known: what the decision layer needs to replay it under any heads."""

    name: str
    states: np.ndarray
    speech: list
    onset_ms: float | None = None
    label: str | None = None
    subtype: str | None = None


def make_clip(model: AmdModel, vad: OfflineSpeechDetector, name: str, pcm: np.ndarray, **kw: object) -> Clip:
    pcm = pad_call(pcm)
    return Clip(name, gru_states(model, [call_features(pcm)])[0], vad.events(pcm), **kw)  # type: ignore[arg-type]


def verdict(clip: Clip, heads: Heads, detectors: Sequence[DetectorConfig]):  # noqa: ANN201 (Verdict)
    return replay_trace(build_trace(clip.name, CLASSES, heads.probs(clip.states), clip.speech), detectors)


G = TypeVar("G", str, int)


def heads_by_group(
    names: Sequence[str], group_of: dict[str, G], fit_without: Callable[[G], Heads], what: str = "group"
) -> dict[str, Heads]:
    """Cross-validation by group: each name gets the heads fitted without its whole group."""
    out: dict[str, Heads] = {}
    for g in sorted({group_of[n] for n in names}):
        h = fit_without(g)
        held = [n for n in names if group_of[n] == g]
        print(f"{what} {g}: {len(held)} held out", flush=True)
        out.update(dict.fromkeys(held, h))
    return out


def human_speaker_folds(speakers: Sequence[str], k: int) -> dict[str, str]:
    """Each recording set's CV fold: itself when k is 0 (or not below the number of sets), else one of the
    k folds `folds.cv_held` deals over the sorted names (the fold's name lists its sets)."""
    from amd_model.tools.folds import cv_held

    if k <= 0 or k >= len(speakers):
        return {s: s for s in speakers}
    return {s: "+".join(sorted(held)) for held in cv_held(speakers, k) for s in held}


def summarize_machine(clips: Sequence[Clip], heads_for: dict[str, Heads], detectors: Sequence[DetectorConfig]) -> str:
    """Real greetings: share called machine and the machine verdicts' median ms after onset."""
    lat, n_m = [], 0
    for c in clips:
        v = verdict(c, heads_for[c.name], detectors)
        if v.label == "machine":
            n_m += 1
            if c.onset_ms is not None:
                lat.append(v.t_ms - c.onset_ms)
    p50 = f"{np.median(lat):.0f} ms" if lat else "-"
    return f"{n_m}/{len(clips)} machine ({100 * n_m / max(1, len(clips)):.1f} %), machine p50 {p50}"


def summarize_humans(clips: Sequence[Clip], heads_for: dict[str, Heads], detectors: Sequence[DetectorConfig]) -> str:
    out = []
    for sub in sorted({c.subtype for c in clips}):
        group = [c for c in clips if c.subtype == sub]
        vs = [verdict(c, heads_for[c.name], detectors) for c in group]
        n_h = sum(v.label == "human" for v in vs)
        n_m = sum(v.label == "machine" for v in vs)
        out.append(f"{sub}: {n_h}/{len(group)} human ({100 * n_h / len(group):.1f} %), {n_m} machine")
    return "; ".join(out)


def summarize_split(clips: Sequence[Clip], heads: Heads, detectors: Sequence[DetectorConfig]) -> str:
    """A labelled corpus split through `evaluation.metrics`: accuracy, humans, business pickups, machine p50."""
    results = []
    for c in clips:
        v = verdict(c, heads, detectors)
        call = LabelledCall(c.name, Path(c.name), str(c.label), subtype=c.subtype, speech_onset_ms=c.onset_ms)
        results.append(CallResult(call, v, v, c.onset_ms, None))
    m = metrics(results, "ours")
    humans = m["per_class"].get("human", {"support": 0})
    hum = m["confusion"].get("human", {}).get("human", 0)
    biz = m["business_pickups_human"]
    p50 = m["latency_ms"]["machine_after_speech_onset"]["p50"]
    return (f"{100 * m['accuracy']:.1f} %, humans {hum}/{humans['support']}, "
            f"business {round((biz['rate'] or 0) * biz['n'])}/{biz['n']}, "
            f"machine p50 {'-' if p50 is None else f'{p50:.0f} ms'}")


def missed_greetings(clips: Sequence[Clip], heads_for: dict[str, Heads], detectors: Sequence[DetectorConfig]) -> str:
    """The greetings not called machine, with what they were called and when: the cases to listen to."""
    out = []
    for c in clips:
        v = verdict(c, heads_for[c.name], detectors)
        if v.label != "machine":
            out.append(f"{c.name} ({v.label} at {v.t_ms:.0f} ms, {v.detector})")
    return ", ".join(out) or "none"


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0915 (one linear experiment)
    from amd_model.tools.corpus import DEV_GREETINGS, dev_greetings_split
    from amd_model.tools.folds import cv_held, real_file, real_twins
    from amd_model.tools.real_voice_probe import cut_after_onset
    from amd_model.tools.train import load_features, load_meta, step_targets, step_weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--humans", type=Path, required=True, help="a folder from amd_model.tools.real_humans")
    ap.add_argument("--real-dir", type=Path, default=DEV_GREETINGS)
    ap.add_argument("--real-weight", type=float, default=2.0, help="loss weight of calls with a real greeting")
    ap.add_argument("--human-weight", type=float, default=0.0,
                    help="train on the real-voice pickups too, at this loss weight (their row is then "
                         "cross-validated by recording set); 0 = measure them only")
    ap.add_argument("--human-folds", type=int, default=0,
                    help="with --human-weight: cross-validate over this many folds of recording sets (round robin "
                         "over their sorted names) instead of one fit per set; 0 = one per set")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--cut-ms", type=int, default=700)
    ap.add_argument("--workflow", default="default")
    ap.add_argument("--presets", type=Path, default=None, help="presets JSON (default: the shipped one)")
    ap.add_argument("--base", type=Path, default=SHIPPED,
                    help="the graph whose GRUs are frozen and whose heads are the start and the L2 anchor (default: "
                         "the shipped one; 1.4.0 was refitted from 1.3.0, `git show 3c0fee4:amd_model/amd.onnx`)")
    ap.add_argument("--export", type=Path, default=None, help="write the full refit into a copy of the graph here")
    ap.add_argument("--version", default="1.3.0-heads", help="model version written beside --export")
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the GRU states (reused when present)")
    args = ap.parse_args(argv)
    for path, what in ((args.corpus / "meta.jsonl", "a corpus (`callgate corpus build`)"),
                       (args.humans / "meta.jsonl", "a real-human set (`python -m amd_model.tools.real_humans`)"),
                       (args.base, "an AMD graph")):
        if not path.is_file():
            ap.error(f"{path}: not found; expected {what}")

    model = AmdModel(args.base)
    shipped = load_heads(args.base)
    base = json.loads(args.base.with_suffix(".json").read_text())["version"]
    detectors = load_presets(args.presets)[args.workflow]
    vad = OfflineSpeechDetector()
    metas = load_meta(args.corpus)
    files = sorted(p.name for p in args.real_dir.glob("*.wav"))
    hmeta = {m["file"]: m for m in (json.loads(x) for x in (args.humans / "meta.jsonl").read_text().splitlines()
                                      if x.strip())}
    if args.cache and args.cache.is_file():
        with open(args.cache, "rb") as fh:
            states, greetings, cut, humans, split_clips = pickle.load(fh)
    else:
        feats = load_features(args.corpus, metas)
        print(f"GRU states of {len(metas)} corpus calls ...", flush=True)
        states = gru_states(model, [f.astype(np.float32) for f in feats])
        greetings, cut = [], []
        for f in files:
            pcm = load_audio(args.real_dir / f)
            clip = make_clip(model, vad, f, pcm, label="machine")
            clip.onset_ms = next((t for e, t, _ in clip.speech if e == "start"), None)
            greetings.append(clip)
            if clip.onset_ms is not None:
                short = cut_after_onset(pcm, clip.onset_ms, args.cut_ms)
                cut.append(make_clip(model, vad, f, short, onset_ms=clip.onset_ms))
        humans = [make_clip(model, vad, m["file"], load_audio(args.humans / m["file"]), subtype=m["subtype"])
                  for m in hmeta.values()]
        split_clips = {
            split: [make_clip(model, vad, m["file"], load_audio(args.corpus / m["file"]), label=m["label"],
                              subtype=m.get("subtype"), onset_ms=m.get("speech_onset_ms"))
                    for m in metas if m["split"] == split]
            for split in ("val", "test")
        }
        if args.cache:
            with open(args.cache, "wb") as fh:
                pickle.dump((states, greetings, cut, humans, split_clips), fh)
    targets = [step_targets(m, st.shape[0]) for m, st in zip(metas, states, strict=True)]
    weights = [step_weights(m, t) * (args.real_weight if m.get("subtype") == "vm_real" else 1.0)
               for m, t in zip(metas, targets, strict=True)]
    g_targets = [step_targets({"label": "machine", "speech_onset_ms": c.onset_ms}, c.states.shape[0]) for c in greetings]

    h_targets = [step_targets(hmeta[c.name], c.states.shape[0]) for c in humans]
    train = [i for i, m in enumerate(metas) if m["split"] == "train"]

    speaker_fold = human_speaker_folds(sorted({m["speaker"] for m in hmeta.values()}), args.human_folds)

    def fit(held: set[str], held_fold: str | None = None) -> Heads:
        ids = [i for i in train if real_file(metas[i]) not in held]
        g = [j for j, c in enumerate(greetings) if c.name not in held]
        hs = ([j for j, c in enumerate(humans) if speaker_fold[hmeta[c.name]["speaker"]] != held_fold]
              if args.human_weight else [])
        return fit_heads(
            [states[i] for i in ids] + [greetings[j].states for j in g] + [humans[j].states for j in hs],
            [targets[i] for i in ids] + [g_targets[j] for j in g] + [h_targets[j] for j in hs],
            [weights[i] for i in ids] + [np.full(g_targets[j].shape[0], args.real_weight, np.float32) for j in g]
            + [np.full(h_targets[j].shape[0], args.human_weight, np.float32) for j in hs],
            shipped, l2=args.l2, steps=args.steps,
        )

    groups = real_twins(args.real_dir, files)
    folds = cv_held(files, args.cv, groups)
    cv_heads = heads_by_group(files, {f: j for j, held in enumerate(folds, 1) for f in held},
                              lambda j: fit(folds[j - 1]), "greetings fold")
    full = fit(set())
    human_heads = {c.name: full for c in humans}  # measured only: the full fit never saw them
    if args.human_weight:
        human_heads = heads_by_group([c.name for c in humans], {n: speaker_fold[m["speaker"]] for n, m in hmeta.items()},
                                     lambda fold: fit(set(), held_fold=fold), "recording sets")
    _tr, held_out_130 = dev_greetings_split([Path(f) for f in files])
    unseen = {p.name for p in held_out_130}

    ship_for = {f: shipped for f in files}
    rows = [
        ("real greetings (38), default", summarize_machine(greetings, ship_for, detectors),
         summarize_machine(greetings, cv_heads, detectors)),
        ("  the 19 1.3.0 never trained on", summarize_machine([c for c in greetings if c.name in unseen], ship_for, detectors),
         summarize_machine([c for c in greetings if c.name in unseen], cv_heads, detectors)),
        (f"greetings cut {args.cut_ms} ms after onset + silence", summarize_machine(cut, ship_for, detectors),
         summarize_machine(cut, cv_heads, detectors)),
        ("real human voices (real_humans)" + (" , CV by recording set" if args.human_weight else ""),
         summarize_humans(humans, {c.name: shipped for c in humans}, detectors),
         summarize_humans(humans, human_heads, detectors)),
    ]
    for split, clips in split_clips.items():
        res = {name: summarize_split(clips, heads, detectors) for name, heads in (("shipped", shipped), ("refit", full))}
        rows.append((f"folds_s29 {split} split ({len(clips)})", res["shipped"], res["refit"]))
    print(f"\npreset '{args.workflow}'; refit: l2 {args.l2}, {args.steps} steps, real weight {args.real_weight}, "
          f"human weight {args.human_weight}; "
          "real-greeting rows are 5-fold CV (twins grouped), the others use the heads fitted on all 38")
    for name, a, b in rows:
        print(f"{name}\n    {base}: {a}\n    refit: {b}")
    print(f"greetings the refit misses in CV: {missed_greetings(greetings, cv_heads, detectors)}")
    if args.export:
        recipe = {"command": "python -m amd_model.tools.head_refit " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "l2": args.l2, "steps": args.steps, "real_weight": args.real_weight,
                  "human_weight": args.human_weight, "corpus_train_calls": len(train),
                  "real_greetings": len(greetings), "real_human_pickups": len(humans) if args.human_weight else 0}
        export(args.base, args.export, full, args.version, recipe)
        print(f"wrote {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
