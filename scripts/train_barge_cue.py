"""Build the barge-in early cue (processors/interruption.py BargeCue) from offline synthetic voices.

Data: lines said through the simulator's telephone channel and a µ-law round trip, like a scripted
caller's: floor-taking interruptions (positives) against continuers ("uh-huh", "yeah", "right",
"mm-hmm", "okay", ...) and noises (cough, door, "ahem", "hm", "ha") (negatives). Each is cut at its
energy onset (the first 20 ms frame >= -50 dBFS, what the analyzer does live) and described by the
first `--frames` frames (processors.interruption.cue_features, the serving code's own features).

Split: training voices (espeak-ng variants, flite kal/awb, three speaking rates) and phrases are
disjoint from the held-out ones (the bench's four espeak voices, two more espeak voices, flite slt and
rms; the bench's interrupting lines), so the printed test figures are on voices and phrases the model
never saw. Model: 68 -> 16 tanh -> 1 logistic, class-balanced, Adam, numpy (seconds on a CPU).

    python scripts/train_barge_cue.py [--out processors/data/barge_cue.json] [--frames 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callgate import synth  # noqa: E402
from callgate.audio import pcm_to_ulaw, to_int16, ulaw_to_pcm  # noqa: E402
from processors.interruption import (  # noqa: E402
    CUE_FRAME,
    CUE_PATH,
    InterruptionParams,
    cue_features,
    frame_level_db,
    frame_logmel,
)
from simulator.script import NOISES, _trim  # noqa: E402

ONSET_DBFS = InterruptionParams().early_onset_dbfs  # where the analyzer's look starts live
INTERRUPT_TRAIN = [
    "wait", "stop", "hold on a second", "excuse me", "sorry to interrupt", "no, that's wrong", "can I ask something",
    "I need to go now", "what did you say", "hey, listen", "actually I already have one", "but what about the price",
    "please stop talking", "just a moment", "how much is it", "is this a sales call", "not interested, thanks",
    "that's not what I asked", "could you repeat that", "hang on", "listen to me", "do you have a cheaper one",
    "let me ask you something", "where are you calling from", "who is this", "give me a second", "that's too expensive",
    "I don't understand", "pardon me", "tell me the price", "my question is simple", "cancel my plan",
    "I'm busy right now", "one moment please", "slow down please", "can I speak to a person", "no no no",
    "hello, are you there", "what's the catch", "stop right there", "is that per month", "sorry, I didn't catch that",
    "why are you calling", "put me through to sales", "that doesn't work for me", "forget it",
]  # fmt: skip
INTERRUPT_TEST = [  # scripts/bench_barge_in.py's lines
    "Sorry, wait, I have a question.", "Hold on, what was that?", "Excuse me, I need to stop you there.",
    "No, I don't want that.", "Wait a minute, please.", "Can you just tell me the price?",
    "Stop, I'm not interested.", "What do you mean by that?", "Hang on, let me think.",
    "Actually, I have a question.", "Sorry to cut in, but how long is the contract?", "Please, just stop.",
]  # fmt: skip
CONTINUER_LED = ["Yeah, but how much is it?", "Okay, wait, stop.", "Right, but I already have one.", "Mm, no, not for me."]
BACKCHANNEL_TRAIN = ["uh-huh", "yeah", "right", "mm-hmm", "okay", "mhm", "uh huh", "yeah yeah", "ok", "yep",
                     "right right", "mm", "hmm", "okay okay", "sure", "yes"]  # fmt: skip
BACKCHANNEL_TEST = ["uh-huh", "yeah", "right", "mm-hmm", "okay"]
NOISE_SAY = ["ahem", "hm", "ha"]
ESPEAK_TRAIN = [
    "en-us+m1", "en-us+m2", "en-us+m4", "en-us+m6", "en-us+f1", "en-us+f3", "en-us+f5", "en-gb+m3", "en-gb+f1",
    "en-us+klatt", "en-us+m7", "en-gb+f3", "en-us+m8", "en-gb+m2", "en-gb+f5", "en-us+klatt3", "en-us+Andy",
    "en-us+Annie", "en-us+david", "en-us+linda", "en-us+john", "en-us+steph", "en-gb+robert", "en-us+belinda",
    "en-us+edward", "en-us+travis", "en-gb+m4", "en-us+klatt4",
]  # fmt: skip
FLITE_TRAIN = ["kal", "awb"]
ESPEAK_TEST = ["en-us+m3", "en-us+f2", "en-gb+m1", "en-us+f4", "en-us+m5", "en-gb+klatt2"]  # first four: the bench's
FLITE_TEST = ["slt", "rms"]
FLITE = {"kal", "awb", "slt", "rms", "kal16"}


def render(text: str, voice: str, rate: int | None) -> np.ndarray:
    """A line as the scripted caller sends it (simulator/script.py render), then a µ-law round trip."""
    if text in NOISES:
        x = synth.telephone_channel(NOISES[text](rate or 0))
    else:
        engine = "flite" if voice in FLITE else "espeak-ng"
        x = synth.speech(text, voice=voice, engine=engine, rate=rate)
        x = synth.telephone_channel(_trim(x * (0.5 / (np.max(np.abs(x)) + 1e-9))))
    pcm = np.concatenate([np.zeros(1600, np.int16), to_int16(x), np.zeros(4000, np.int16)])
    pcm = pcm[: len(pcm) // CUE_FRAME * CUE_FRAME]
    return np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(pcm.astype("<i2").tobytes())), dtype=np.int16)


def describe(pcm: np.ndarray, frames: int) -> np.ndarray | None:
    """cue_features of the first `frames` frames from the energy onset (None: never loud enough)."""
    f = pcm.reshape(-1, CUE_FRAME)
    levels = np.array([frame_level_db(x) for x in f])
    loud = np.nonzero(levels >= ONSET_DBFS)[0]
    if not len(loud) or loud[0] + frames > len(f):
        return None
    o = loud[0]
    return cue_features(levels[o : o + frames], np.stack([frame_logmel(x) for x in f[o : o + frames]]))


def jobs() -> list[tuple[str, str, int | None, int, str]]:
    out = []
    for split in ("train", "test"):
        voices = ESPEAK_TRAIN + FLITE_TRAIN if split == "train" else ESPEAK_TEST + FLITE_TEST
        rates: list[int | None] = [None, 140, 220] if split == "train" else [None]
        phrases = INTERRUPT_TRAIN if split == "train" else INTERRUPT_TEST
        bcs = BACKCHANNEL_TRAIN if split == "train" else BACKCHANNEL_TEST
        for v, r in itertools.product(voices, rates):
            out += [(p, v, r, 1, split) for p in phrases]
            out += [(b, v, r, 0, f"{split}_bc") for b in bcs]
            out += [(n, v, r, 0, f"{split}_noise") for n in NOISE_SAY]
            if split == "test":
                out += [(p, v, r, 1, "test_cont") for p in CONTINUER_LED]
        seeds = range(6) if split == "train" else range(100, 103)
        out += [(n, "-", s, 0, f"{split}_noise") for s in seeds for n in NOISES]
    return out


def fit(z: np.ndarray, y: np.ndarray, hidden: int, seed: int = 0, epochs: int = 400, lam: float = 1e-3) -> list:
    """One tanh hidden layer, logistic output, class-balanced cross-entropy + L2, full-batch Adam."""
    rng = np.random.default_rng(seed)
    d = z.shape[1]
    params = [rng.normal(0, 1 / np.sqrt(d), (d, hidden)), np.zeros(hidden), rng.normal(0, 1 / np.sqrt(hidden), hidden),
              np.zeros(1)]  # fmt: skip
    cw = np.where(y == 1, 0.5 / np.mean(y == 1), 0.5 / np.mean(y == 0))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, epochs + 1):
        h = np.tanh(z @ params[0] + params[1])
        p = 1 / (1 + np.exp(-(h @ params[2] + params[3][0])))
        g = (p - y) * cw / len(y)
        gh = np.outer(g, params[2]) * (1 - h**2)
        grads = [z.T @ gh + lam * params[0], gh.sum(0), h.T @ g + lam * params[2], np.array([g.sum()])]
        for i, gr in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr**2
            params[i] -= 0.01 * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=CUE_PATH)
    ap.add_argument("--frames", type=int, default=10, help="20 ms frames after the onset (10: decide at 200 ms)")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.7, help="the operating point the figures are printed at")
    args = ap.parse_args()

    todo = jobs()
    print(f"rendering {len(todo)} lines ...", flush=True)

    def one(job: tuple) -> tuple | None:
        text, voice, rate, label, group = job
        try:
            x = describe(render(text, voice, rate), args.frames)
        except RuntimeError as e:
            print(f"  skipped {text!r} / {voice}: {e}", flush=True)
            return None
        return None if x is None else (x, label, group, text, voice)

    with ThreadPoolExecutor(2) as ex:
        rows = [r for r in ex.map(one, todo) if r is not None]
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows], dtype=float)
    group = np.array([r[2] for r in rows])
    tr = np.char.startswith(group.astype(str), "train")
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    z = (x - mu) / sd
    params = fit(z[tr], y[tr], args.hidden)
    p = 1 / (1 + np.exp(-(np.tanh(z @ params[0] + params[1]) @ params[2] + params[3][0])))
    th = args.threshold
    for split in ("train", "test"):
        pos, bc, nz = (group == split) & (y == 1), group == f"{split}_bc", group == f"{split}_noise"
        print(f"{split}: interruptions cleared early {np.mean(p[pos] >= th):.3f} (n={pos.sum()}), "
              f"continuers cleared {np.mean(p[bc] >= th):.3f} (n={bc.sum()}), noises cleared {np.mean(p[nz] >= th):.3f} "
              f"(n={nz.sum()})  [threshold {th}]")  # fmt: skip
    pos, bc, nz = group == "test", group == "test_bc", group == "test_noise"
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        print(f"  test at threshold {t}: interruptions {np.mean(p[pos] >= t):.3f}, continuers {np.mean(p[bc] >= t):.3f}, "
              f"noises {np.mean(p[nz] >= t):.3f}")
    cont = group == "test_cont"
    print(f"test, continuer-led interruptions ('yeah, but ...'): cleared early {np.mean(p[cont] >= th):.3f} (n={cont.sum()})")
    voices = np.array([r[4] for r in rows])
    for v in ESPEAK_TEST + FLITE_TEST:
        m = (voices == v) & ((group == "test") | (group == "test_bc"))
        print(f"  {v:14s} interruptions {np.mean(p[m & (y == 1)] >= th):.2f}  continuers {np.mean(p[m & (y == 0)] >= th):.2f}")
    weights = {"frames": args.frames, "mu": mu.tolist(), "sd": sd.tolist(), "W1": params[0].tolist(),
               "b1": params[1].tolist(), "w2": params[2].tolist(), "b2": float(params[3][0])}  # fmt: skip
    args.out.write_text(json.dumps(weights))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
