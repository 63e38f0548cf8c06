"""The encoder inside the streaming head, measured per generalization fold (issue 11, part 3).

    python -m amd_model.tools.encoder_fusion CORPUS REAL_DIR [--times 1.0 2.0] [--cache FILE]

`encoder_probe --fold-nets` showed that a snapshot of Pipecat's Smart-Turn encoder, used as one more
machine detector, carries the real greetings but calls business pickups machine: the snapshot cannot
see that the caller then stops and waits. Here the embedding goes where that is seen, next to the
GRU's state: each fold's net (CORPUS/folds, frozen) gives its per-step GRU output; a small fused head
adds, from onset + t on (the latest of `--times`), the embedding of the call's audio up to then:

    logits_t = net.head(h_t) + W2 . relu(W1 [h_t, P e_t, available_t])   (W2 starts at zero)

trained per fold on that fold's training calls (step targets, class and step weights as the net's
own training), then run through the production decision layer on the fold's test calls beside the net
alone. Training embeddings are taken at the labelled speech onset, test ones at the live VAD's (as a
call would). A measurement before any change to the shipped model: the runtime would run the encoder
once per listed time per call (7.5 ms each, off the event loop).

Other modes: `--joint` feeds the embedding into the fold net's GRU and fine-tunes it; `--scalar` feeds
only the fold probe's logit; `--scratch` trains a new net per fold (the fold nets' own loop and budget)
with the probe's logit as a GRU input from the start, training calls getting cross-fitted logits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amd_model.tools.encoder_probe import FoldBench, corpus_embeddings, onset_embeddings, pooled_cv_row

STEP_S = 0.1


def _avail(n_steps: int, onset_ms: float | None, times: Sequence[float], embs: Sequence[np.ndarray | None],
           dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the latest embedding taken so far (zeros before the first) and which times are in."""
    e = np.zeros((n_steps, dim), np.float32)
    flags = np.zeros((n_steps, len(times)), np.float32)
    if onset_ms is None:
        return e, flags
    for k, (t, v) in enumerate(zip(times, embs, strict=True)):
        if v is None:
            continue
        first = int(np.ceil((onset_ms / 1000 + t) / STEP_S)) - 1  # step whose end passes onset + t
        if first < n_steps:
            e[max(first, 0) :] = v
            flags[max(first, 0) :, k] = 1.0
    return e, flags


def gru_outputs(net: Any, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The frozen net's per-step GRU output (what its head reads), call by call."""
    import torch

    from amd_model.features import FRAMES_PER_STEP, N_MELS

    out = []
    net.eval()
    with torch.no_grad():
        for f in feats:
            x = torch.from_numpy(f.astype(np.float32))
            e = net.embed(x.reshape(-1, FRAMES_PER_STEP, N_MELS)).reshape(1, x.shape[0], -1)
            out.append(net.gru(e)[0][0].numpy())
    return out


class FusedHead:
    """net.head(h) + a zero-initialised MLP over [h, projected embedding, availability flags]."""

    def __init__(self, net: Any, dim: int, n_times: int, proj: int = 32, width: int = 64, seed: int = 0) -> None:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.base = net.head
        self.proj = nn.Linear(dim, proj)
        self.mlp = nn.Sequential(nn.Linear(net.hidden + proj + n_times, width), nn.ReLU(), nn.Linear(width, net.head.out_features))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.mu = np.zeros(dim, np.float32)
        self.sd = np.ones(dim, np.float32)

    def logits(self, h: Any, e: Any, flags: Any) -> Any:
        import torch

        with torch.no_grad():
            base = self.base(h)
        pe = self.proj(e) * flags.amax(-1, keepdim=True)
        return base + self.mlp(torch.cat([h, pe, flags], -1))

    def params(self) -> list:
        return [*self.proj.parameters(), *self.mlp.parameters()]

    def probs(self, h: np.ndarray, e: np.ndarray, flags: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            z = self.logits(torch.from_numpy(h), torch.from_numpy((e - self.mu) / self.sd * (flags.max(-1, keepdims=True) > 0)),
                            torch.from_numpy(flags))
            return torch.softmax(z, -1).numpy()


def _scale_and_loss(es: Sequence[np.ndarray], fl: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> tuple:
    """The embedding's scaling (over the steps where it is present) and the per-step loss with the
    net's own class weights (square-root balanced)."""
    import torch

    from amd_model.tools.train import CLASSES

    on = np.concatenate([e[f.max(-1) > 0] for e, f in zip(es, fl, strict=True)])
    counts = np.bincount(np.concatenate(ys), minlength=len(CLASSES)).astype(np.float64)
    cw = torch.tensor((counts.sum() / (len(CLASSES) * np.maximum(counts, 1))) ** 0.5, dtype=torch.float32)
    return on.mean(0), on.std(0) + 1e-3, torch.nn.CrossEntropyLoss(weight=cw, reduction="none")


def train_fused(net: Any, hs: Sequence[np.ndarray], es: Sequence[np.ndarray], fl: Sequence[np.ndarray],
                ys: Sequence[np.ndarray], ws: Sequence[np.ndarray], epochs: int = 6, seed: int = 0, proj: int = 32,
                emb_dropout: float = 0.0) -> FusedHead:
    import torch

    head = FusedHead(net, es[0].shape[1], fl[0].shape[1], proj=proj, seed=seed)
    head.mu, head.sd, lossf = _scale_and_loss(es, fl, ys)
    W = torch.from_numpy(np.concatenate(ws))
    opt = torch.optim.AdamW(head.params(), lr=2e-3, weight_decay=1e-2)
    rng = np.random.default_rng(seed)
    H = torch.from_numpy(np.concatenate(hs))
    mask = np.concatenate([f.max(-1, keepdims=True) > 0 for f in fl])
    E = torch.from_numpy(((np.concatenate(es) - head.mu) / head.sd * mask).astype(np.float32))
    F = torch.from_numpy(np.concatenate(fl))
    Y = torch.from_numpy(np.concatenate(ys))
    for _ in range(epochs):
        for b in np.array_split(rng.permutation(len(Y)), max(1, len(Y) // 4096)):
            keep = torch.from_numpy((rng.random((len(b), 1)) >= emb_dropout).astype(np.float32))
            loss = (lossf(head.logits(H[b], E[b] * keep, F[b] * keep), Y[b]) * W[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


class JointNet:
    """The fold net with the embedding fed into its GRU: input = [step summary, P e_t, flags]. Starts as
    the net itself (the GRU's weights for the new inputs are zero), then is fine-tuned whole."""

    def __init__(self, net: Any, dim: int, n_times: int, proj: int = 32, seed: int = 0) -> None:
        import copy

        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.net = copy.deepcopy(net)
        h = net.hidden
        gru = nn.GRU(h + proj + n_times, h, batch_first=True)
        with torch.no_grad():
            gru.weight_ih_l0.zero_()
            gru.weight_ih_l0[:, :h] = net.gru.weight_ih_l0
            gru.weight_hh_l0.copy_(net.gru.weight_hh_l0)
            gru.bias_ih_l0.copy_(net.gru.bias_ih_l0)
            gru.bias_hh_l0.copy_(net.gru.bias_hh_l0)
        self.net.gru = gru
        self.proj = nn.Linear(dim, proj)
        self.mu = np.zeros(dim, np.float32)
        self.sd = np.ones(dim, np.float32)

    def params(self) -> list:
        return [*self.net.parameters(), *self.proj.parameters()]

    def logits(self, x: Any, e: Any, flags: Any) -> Any:
        """x (B, T, F, M) raw log-mels, e (B, T, dim) standardized and zero where absent, flags (B, T, k)."""
        import torch

        from amd_model.features import FRAMES_PER_STEP, N_MELS

        b, t = x.shape[:2]
        z = self.net.embed(x.reshape(b * t, FRAMES_PER_STEP, N_MELS)).reshape(b, t, -1)
        out, _ = self.net.gru(torch.cat([z, self.proj(e), flags], -1))
        return self.net.head(self.net.drop(out))

    def probs(self, feats: np.ndarray, e: np.ndarray, flags: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        on = flags.max(-1, keepdims=True) > 0
        with torch.no_grad():
            z = self.logits(torch.from_numpy(feats.astype(np.float32))[None],
                            torch.from_numpy(((e - self.mu) / self.sd * on).astype(np.float32))[None],
                            torch.from_numpy(flags)[None])
            return torch.softmax(z[0], -1).numpy()


def train_joint(net: Any, feats: Sequence[np.ndarray], es: Sequence[np.ndarray], fl: Sequence[np.ndarray],
                ys: Sequence[np.ndarray], ws: Sequence[np.ndarray], epochs: int = 3, seed: int = 0,
                proj: int = 32, emb_dropout: float = 0.0, lr: float = 5e-4, batch: int = 32) -> JointNet:
    """Fine-tune the fold net with the embedding as a GRU input, on its own training calls."""
    import torch

    from amd_model.tools.train import CLASSES

    model = JointNet(net, es[0].shape[1], fl[0].shape[1], proj=proj, seed=seed)
    model.mu, model.sd, lossf = _scale_and_loss(es, fl, ys)
    opt = torch.optim.AdamW(model.params(), lr=lr, weight_decay=5e-3)
    rng = np.random.default_rng(seed)
    model.net.train()
    for _ in range(epochs):
        order = rng.permutation(len(feats))
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            tmax = max(len(feats[i]) for i in idx)
            x = np.zeros((len(idx), tmax, *feats[0].shape[1:]), np.float32)
            e = np.zeros((len(idx), tmax, es[0].shape[1]), np.float32)
            f = np.zeros((len(idx), tmax, fl[0].shape[1]), np.float32)
            y = np.zeros((len(idx), tmax), np.int64)
            w = np.zeros((len(idx), tmax), np.float32)
            for j, i in enumerate(idx):
                n = len(feats[i])
                keep = float(rng.random() >= emb_dropout)
                on_i = fl[i].max(-1, keepdims=True) > 0
                x[j, :n], y[j, :n], w[j, :n] = feats[i], ys[i], ws[i]
                e[j, :n] = (es[i] - model.mu) / model.sd * on_i * keep
                f[j, :n] = fl[i] * keep
            logits = model.logits(torch.from_numpy(x), torch.from_numpy(e), torch.from_numpy(f))
            loss = (lossf(logits.reshape(-1, len(CLASSES)), torch.from_numpy(y).reshape(-1))
                    * torch.from_numpy(w).reshape(-1)).sum() / float((w > 0).sum())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.params(), 1.0)
            opt.step()
    model.net.eval()
    return model


def _probe_logits(emb: dict[int, list], test_emb: dict[str, tuple], train_ids: Sequence[int], metas: Sequence[dict],
                  n_times: int) -> tuple[dict[int, list], dict[str, tuple], int]:
    """Per time, a machine-vs-human linear probe on the fold's training calls; every embedding becomes its logit."""
    from amd_model.tools.encoder_probe import fit_logistic, logit

    hm = [i for i in train_ids if i in emb and metas[i]["label"] in ("human", "machine")]
    probes = []
    for k in range(n_times):
        have = [i for i in hm if emb[i][k] is not None]
        probes.append(fit_logistic(np.stack([emb[i][k] for i in have]),
                                   np.array([metas[i]["label"] == "machine" for i in have])) if have else None)

    def read(k: int, v: np.ndarray | None) -> np.ndarray | None:
        if v is None or probes[k] is None:
            return None
        return np.array([logit(probes[k], v)], np.float32)

    return ({i: [read(k, v) for k, v in enumerate(vs)] for i, vs in emb.items()},
            {key: (on, [read(k, v) for k, v in enumerate(vs)]) for key, (on, vs) in test_emb.items()}, 1)


def _crossfit_logits(emb: dict[int, list], train_ids: Sequence[int], metas: Sequence[dict], n_times: int,
                     k: int = 5, seed: int = 0) -> dict[int, list]:
    """The training calls' probe logits, each from a probe fitted without it (k parts of the fold's human
    and machine training calls): a net trained on in-sample logits would learn to trust the probe as
    it never is on a held-out call."""
    hm = [i for i in train_ids if i in emb and metas[i]["label"] in ("human", "machine")]
    part = np.random.default_rng(seed).permutation(len(hm)) % k
    out: dict[int, list] = {}
    for j in range(k):
        rest = {i: emb[i] for i, p in zip(hm, part, strict=True) if p != j}
        held = {i: emb[i] for i, p in zip(hm, part, strict=True) if p == j}
        logits, _, _ = _probe_logits({**rest, **held}, {}, list(rest), metas, n_times)
        out.update({i: logits[i] for i in held})
    return out


class ScratchNet:
    """A net trained from scratch with the probe's logit (and which read-outs are in) as GRU inputs."""

    def __init__(self, net: Any) -> None:
        self.net = net.eval()

    @staticmethod
    def inputs(e: np.ndarray, flags: np.ndarray) -> np.ndarray:
        return np.c_[np.clip(e, -10, 10) / 5, flags].astype(np.float32)

    def probs(self, feats: np.ndarray, e: np.ndarray, flags: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(feats.astype(np.float32))[None]
            z, _ = self.net(x, extra=torch.from_numpy(self.inputs(e, flags))[None])
            return torch.softmax(z[0], -1).numpy()


def preset_grid(detectors: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    """The early machine detectors made stricter, one combination per entry (for a model whose
    p(machine) is confident sooner than the net the presets were tuned for)."""
    out = []
    for talk_t in (0.75, 0.9, 0.97):
        for talk_w in (500, 1000):
            for fast_t in (0.8, 0.95, None):
                for late_t in (0.95, 0.99):
                    dets = []
                    for d in detectors:
                        if d.name == "machine_talking":
                            d = d.model_copy(update={"threshold": talk_t, "window_ms": talk_w})
                        elif d.name == "machine_fast":
                            if fast_t is None:
                                continue
                            d = d.model_copy(update={"threshold": fast_t})
                        elif d.name == "machine":
                            d = d.model_copy(update={"threshold": late_t})
                        dets.append(d)
                    out.append((f"talking {talk_t:g}/{talk_w} ms, fast {fast_t or 'off'}, machine {late_t:g}", dets))
    return out


def pick_preset(scored: Sequence[tuple[str, dict]], base: dict) -> str:
    """The fastest machine verdicts on the fold's validation calls among the combinations that keep
    accuracy (-1 point), human recall (-1) and business pickups (-2) of the net with the shipped preset."""
    def rate(m: dict, key: str) -> float:
        if key == "human":
            r = m["per_class"].get("human", {}).get("recall")
        else:
            r = m["business_pickups_human"]["rate"]
        return 1.0 if r is None else r

    ok = [(n, m) for n, m in scored
          if m["accuracy"] >= base["accuracy"] - 0.01 and rate(m, "human") >= rate(base, "human") - 0.01
          and rate(m, "business") >= rate(base, "business") - 0.02]
    if not ok:
        return max(scored, key=lambda x: x[1]["accuracy"])[0]
    return min(ok, key=lambda x: x[1]["latency_ms"]["machine_after_speech_onset"]["p50"] or 1e9)[0]


def run(corpus: Path, real_dir: Path, workflow: str, times: Sequence[float], window_s: float,
        cache: Path | None, epochs: int = 6, proj: int = 32, emb_dropout: float = 0.0,
        retune: bool = False, max_val: int = 300, joint: bool = False, scalar: bool = False,
        seed: int = 0, scratch: bool = False, only: Sequence[str] | None = None) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from amd_model.tools.folds import Budget, train_fold
    from amd_model.tools.train import CLASSES, load_features, step_targets, step_weights

    def val_keys(folds: list[Any]) -> dict[str, list[str]]:
        out = {}
        for f in folds:
            ids = sorted(f.val_ids)
            pick = np.random.default_rng(0).choice(len(ids), min(max_val, len(ids)), replace=False)
            out[f.name] = [f"call:{ids[k]}" for k in sorted(pick)]
        return out

    bench = FoldBench.load(corpus, real_dir, workflow,
                           lambda folds: {k for v in val_keys(folds).values() for k in v} if retune else set())
    metas, detectors = bench.metas, bench.detectors
    vkeys = val_keys(bench.folds) if retune else {}
    spoken = [i for i, m in enumerate(metas) if m.get("speech_onset_ms") is not None]
    feats = corpus_embeddings(corpus, metas, spoken, times, window_s, cache)
    keys = [f"encoder@{t:g}s" for t in times]
    emb = {i: [feats[k][j] for k in keys] for j, i in enumerate(spoken)}
    dim = feats[keys[0]].shape[1]
    train_feats = load_features(corpus, metas)
    all_keys = {k for f in bench.folds for k in f.test} | {k for v in vkeys.values() for k in v}
    test_emb = onset_embeddings(bench.items, all_keys, bench.ref.classes, times, window_s)
    out: dict[str, Any] = {"times_s": list(times), "window_s": window_s, "workflow": workflow, "epochs": epochs,
                           "proj": proj, "emb_dropout": emb_dropout, "folds": []}
    pooled: dict[str, list] = {}
    folds = [f for f in bench.folds if not only or f.name in only or f.slug in only]
    for fold in tqdm(folds, desc="folds", unit="fold", file=sys.stderr):
        net, info = train_fold(corpus, fold, Budget(minutes=4.0, max_epochs=15))
        tr = list(fold.train_ids)
        f_emb, f_test, f_dim = emb, test_emb, dim
        if scalar or scratch:  # only the fold's linear probe's logit (per time) reaches the model: no voice identity
            f_emb, f_test, f_dim = _probe_logits(emb, test_emb, tr, metas, len(times))
        model: Any
        if scratch:
            f_emb = {**f_emb, **_crossfit_logits(emb, tr, metas, len(times), seed=seed)}
            extra = {}
            for i in [*tr, *fold.val_ids]:
                e, f = _avail(len(train_feats[i]), metas[i].get("speech_onset_ms"), times,
                              f_emb.get(i, [None] * len(times)), f_dim)
                extra[i] = ScratchNet.inputs(e, f)
            s_net, s_info = train_fold(corpus, fold, Budget(minutes=4.0, max_epochs=15, seed=seed), extra=extra,
                                       store="folds_probe", suffix=f"_s{seed}",
                                       key_extra={"probe_times": list(times), "window_s": window_s, "crossfit": 5})
            model = ScratchNet(s_net)
            info = {**info, "epochs": f"{info.get('epochs')}/{s_info['epochs']}"}
        else:
            ef = [_avail(len(train_feats[i]), metas[i].get("speech_onset_ms"), times,
                         f_emb.get(i, [None] * len(times)), f_dim) for i in tr]
            ys = [step_targets(metas[i], len(train_feats[i])) for i in tr]
            ws = [step_weights(metas[i], y) for i, y in zip(tr, ys, strict=True)]
            if joint:
                model = train_joint(net, [train_feats[i].astype(np.float32) for i in tr], [e for e, _ in ef],
                                    [f for _, f in ef], ys, ws, epochs=epochs, proj=proj, emb_dropout=emb_dropout,
                                    seed=seed)
            else:
                hs = gru_outputs(net, [train_feats[i] for i in tr])
                model = train_fused(net, hs, [e for e, _ in ef], [f for _, f in ef], ys, ws, epochs=epochs,
                                    proj=proj, emb_dropout=emb_dropout, seed=seed)

        def both_probs(keys: Sequence[str], model: Any = model, f_test: dict = f_test, f_dim: int = f_dim,
                       net: Any = net) -> tuple[list[np.ndarray], list[np.ndarray]]:
            """The net's own probabilities and the model's with the encoder, for these calls."""
            plain, fused = [], []
            for k, h in zip(keys, gru_outputs(net, [bench.items[k].feats for k in keys]), strict=True):
                with torch.no_grad():
                    plain.append(torch.softmax(net.head(torch.from_numpy(h)), -1).numpy())
                onset, vs = f_test[k]
                e, f = _avail(len(h), onset, times, vs, f_dim)
                fused.append(model.probs(bench.items[k].feats, e, f) if joint or scratch else model.probs(h, e, f))
            return plain, fused

        chosen = None
        if retune:
            val = [bench.items[k] for k in vkeys[fold.name]]
            vplain, vfused = both_probs(vkeys[fold.name])
            grid = preset_grid(detectors)
            base = bench.score(val, vplain, CLASSES, detectors)[0]
            name = pick_preset([(n, bench.score(val, vfused, CLASSES, d)[0]) for n, d in grid], base)
            chosen = (name, dict(grid)[name])
        test = [bench.items[k] for k in fold.test]
        plain, fused = both_probs(fold.test)
        new = "net trained with probe" if scratch else "net+encoder"
        systems = [("net", plain, CLASSES, detectors), (new, fused, CLASSES, detectors)]
        if chosen is not None:
            systems.append((f"{new}, preset re-picked on val", fused, CLASSES, chosen[1]))
        row = bench.fold_row(fold, test, systems, pooled, info.get("epochs"))
        if chosen is not None:
            row["preset_picked_on_val"] = chosen[0]
        out["folds"].append(row)
    if pooled:
        out["folds"].append(pooled_cv_row(pooled))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from amd_model.tools.encoder_probe import format_fold_nets

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("real_dir", type=Path)
    p.add_argument("--times", type=float, nargs="+", default=[1.0, 2.0], help="seconds after speech onset")
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--workflow", default="default")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=6, help="fused head training epochs over the steps")
    p.add_argument("--proj", type=int, default=32, help="the embedding's projection width")
    p.add_argument("--emb-dropout", type=float, default=0.0, help="drop a call's embedding in training with this chance")
    p.add_argument("--joint", action="store_true",
                   help="feed the embedding into the GRU and fine-tune the whole fold net (instead of a fused head)")
    p.add_argument("--scalar", action="store_true",
                   help="feed only each fold's linear probe logit (per time), not the 768-number embedding")
    p.add_argument("--scratch", action="store_true",
                   help="train a new net per fold with the probe's logit as a GRU input from the start (the fold "
                        "nets' loop and budget; training calls get cross-fitted logits) instead of a fine-tune")
    p.add_argument("--only", nargs="+", default=None, help="only these folds (names or slugs)")
    p.add_argument("--retune", action="store_true",
                   help="also re-pick the early machine detectors per fold on its validation calls")
    p.add_argument("--seed", type=int, default=0, help="seed of the head / fine-tune (the fold nets are fixed)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (args.corpus / "folds").is_dir():
        print(f"{args.corpus}: no folds/ (run `callgate eval {args.corpus} --folds` first)", file=sys.stderr)
        return 2
    rep = run(args.corpus, args.real_dir, args.workflow, args.times, args.window_s, args.cache, args.epochs,
              args.proj, args.emb_dropout, args.retune, joint=args.joint, scalar=args.scalar, seed=args.seed,
              scratch=args.scratch, only=args.only)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        what = ("a net trained with the probe's logit as an input, read up to" if args.scratch
                else "the embedding in the GRU (fine-tuned), read up to" if args.joint
                else "a fused head with the embeddings up to")
        print(format_fold_nets({**rep, "t_s": max(rep["times_s"])}, what))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
