"""Train the transcript-completeness model and export it to ONNX (processors/data/turn_text.onnx).

    python -m turn_eval.train_text [--n 20000] [--sentences 30000] [--seed 3]

Examples, all generated from the seed: turns (turn_eval.dataset.turn_script) from the *dev* word pools
only (every prefix that ends where a caller pauses mid-turn is incomplete (0), the whole turn complete
(1), prefixes cut at random words incomplete too); everyday replies (GENERIC), complete, and cut after
or extended by a function word or filler, incomplete; and everyday caller sentences from the training
templates of turn_eval.text_corpus (short replies, times and dates, requests, names, numbers, addresses,
problems, questions, lists, hesitations), cut at their pause points and after words no sentence ends on.
No example holds a word of the test pools or a line of scripts/bench_agent_latency.py (checked).
Features are processors.endpointer.text_feature_names hashed into 4096 slots; the model is a logistic
regression (full-batch Adam, L2, classes weighted equally), exported as MatMul + Sigmoid (16 KB; the
bias is a feature). It prints accuracy on turns of the held-out *test* pools, on sentences from the
held-out templates, and on the latency bench's lines and their cut-offs. ~20 s on this CPU.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np

from processors.endpointer import TEXT_DIM, TEXT_MODEL_PATH, TextCompletenessModel, text_feature_names
from turn_eval.dataset import KINDS, LEX, turn_script
from turn_eval.text_corpus import BENCH_LINES, is_excluded, sentences


def examples(split: str, n_turns: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    kinds = [k for k, _ in KINDS]
    texts, ys = [], []
    for _ in range(n_turns):
        segs = turn_script(str(rng.choice(kinds)), rng, LEX[split])
        for i in range(1, len(segs)):
            texts.append(" ".join(segs[:i]))
            ys.append(0)
        full = " ".join(segs)
        texts.append(full)
        ys.append(1)
        words = full.split()
        if len(words) > 2 and rng.random() < 0.5:
            texts.append(" ".join(words[: int(rng.integers(1, len(words)))]))
            ys.append(0)
    return texts, np.asarray(ys, dtype=np.float64)


# Everyday replies beyond the turn set's templates (none of them in any test), so the model learns the
# general cue, "a turn that stops on a function word, a filler or mid number is unfinished", rather
# than the templates' words.
GENERIC = [
    "yes please", "no thanks", "that works for me", "sounds good to me", "next week would be better",
    "in the evening if possible", "around three o'clock", "that is correct", "I am not sure", "maybe later",
    "can you repeat that", "what time do you close", "how much does it cost", "I already paid it",
    "it was delivered to the wrong address", "my email is not working", "I want to speak to a manager",
    "please send me a copy", "the second one", "both of them", "just the one", "as soon as possible",
    "thank you very much", "okay great", "not really", "I think so", "tomorrow afternoon", "early morning",
    "the blue one", "at the front desk", "for two people", "on the fifth floor", "with my husband",
]
FUNCTION_ENDINGS = ["and", "the", "to", "my", "is", "for", "with", "about", "because", "so", "um", "uh", "a",
                    "of", "in", "at", "or", "but", "that", "if", "was", "I", "would", "like"]


def generic_examples(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, ys = [], []
    for _ in range(n):
        s = str(rng.choice(GENERIC))
        texts.append(s)
        ys.append(1)
        words = s.split()
        cut = [i for i, w in enumerate(words[:-1]) if w in FUNCTION_ENDINGS]
        if cut:
            texts.append(" ".join(words[: int(rng.choice(cut)) + 1]))
            ys.append(0)
        texts.append(s + " " + str(rng.choice(FUNCTION_ENDINGS)))  # "... and", "... um": goes on
        ys.append(0)
    return texts, ys


def _indices(texts: list[str]) -> list[np.ndarray]:
    return [np.array([zlib.crc32(f.encode()) % TEXT_DIM for f in text_feature_names(t)]) for t in texts]


def train(texts: list[str], y: np.ndarray, epochs: int = 300, lr: float = 0.5, l2: float = 1e-4) -> np.ndarray:
    idx = _indices(texts)
    rows = np.concatenate([np.full(len(ix), i) for i, ix in enumerate(idx)])
    cols = np.concatenate(idx)
    w = np.zeros(TEXT_DIM)
    pos = max(float(y.mean()), 1e-6)
    sw = np.where(y == 1, 0.5 / pos, 0.5 / max(1 - pos, 1e-6))
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, epochs + 1):
        logit = np.bincount(rows, weights=w[cols], minlength=len(y))
        err = (1 / (1 + np.exp(-logit)) - y) * sw  # classes weighted equally
        g = np.bincount(cols, weights=err[rows], minlength=TEXT_DIM) / len(y) + l2 * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= lr * 0.1 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w


def export(w: np.ndarray, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(w.astype(np.float32).reshape(TEXT_DIM, 1), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["p"])],
        "turn_text",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, TEXT_DIM])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])],
        [W],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="callgate")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def corpus_examples(n: int, seed: int, split: str) -> tuple[list[str], np.ndarray]:
    pairs = sentences(n, seed, split)
    return [t for t, _ in pairs], np.asarray([y for _, y in pairs], dtype=np.float64)


def report(model: TextCompletenessModel, name: str, texts: list[str], y: np.ndarray) -> dict[str, float]:
    p = np.array([model.probability(t) for t in texts])
    r = {"n": len(texts), "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
         "complete_recall": float(np.mean(p[y == 1] >= 0.5)), "incomplete_recall": float(np.mean(p[y == 0] < 0.5))}
    print(f"  {name:<44}{r['n']:>7}{r['accuracy']:>9.3f}{r['complete_recall']:>10.3f}{r['incomplete_recall']:>12.3f}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="generated turns (dev word pools)")
    ap.add_argument("--sentences", type=int, default=30000, help="generated everyday sentences (training templates)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=TEXT_MODEL_PATH)
    args = ap.parse_args()
    texts, y = examples("dev", args.n, args.seed)
    gt, gy = generic_examples(args.n // 4, args.seed + 1)
    ct, cy = corpus_examples(args.sentences, args.seed + 2, "train")
    texts, y = texts + gt + ct, np.concatenate([y, np.asarray(gy, dtype=np.float64), cy])
    leaked = [t for t in texts if is_excluded(t)]
    if leaked:
        raise SystemExit(f"{len(leaked)} training examples hold test-pool words or bench lines, e.g. {leaked[0]!r}")
    w = train(texts, y)
    path = export(w, args.out)
    model = TextCompletenessModel(path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KB) from {len(texts)} examples "
          f"({int(y.sum())} complete); none holds a test-pool word or a bench line")
    print(f"  {'held-out evaluation':<44}{'n':>7}{'accuracy':>9}{'complete':>10}{'incomplete':>12}")
    tt, yy = examples("test", 2000, args.seed + 100)
    report(model, "turn-set turns, test word pools", tt, yy)
    ht, hy = corpus_examples(3000, args.seed + 101, "held_out")
    report(model, "everyday sentences, held-out templates", ht, hy)
    bench_full = [(s, 1.0) for s in BENCH_LINES]
    bench_cut = [(c, 0.0) for c in ("I would like to", "I would like to book a", "Next Tuesday if", "In the",
                                    "Can you also check my", "It is with", "My member number is",
                                    "My member number is on the", "Yes, I have", "Okay, thank")]
    bt = [t for t, _ in bench_full + bench_cut]
    report(model, "bench lines (10 complete, 10 cut at a pause)", bt, np.asarray([v for _, v in bench_full + bench_cut]))
    for s in BENCH_LINES + ["my number is", "I'd like to", "on the", "yes", "nine is fine", "I need eggs and",
                            "My number is four one five", "so um"]:
        print(f"    p({s!r}) = {model.probability(s):.3f}")


if __name__ == "__main__":
    main()
