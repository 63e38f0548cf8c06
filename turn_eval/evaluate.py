"""`callgate eval-turns`: callgate's gate + endpointer beside three baselines on one labelled set.

Loading a call runs Silero three times (our VAD, Pipecat's VAD at stop 0.2 s and 0.8 s); the results
are cached next to the WAVs (DIR/.eval_cache/, keyed by file size and mtime), as are Smart-Turn
answers, so a second run or a tuning loop costs only the decision logic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from processors.endpointer import EndpointerParams, ListenPreset, TextCompletenessModel
from processors.gate import GateParams
from turn_eval.dataset import load_labels
from turn_eval.metrics import Summary, Tally, score_call, summarize
from turn_eval.runner import (
    SYSTEMS,
    CachedSmartTurn,
    CallInputs,
    load_call,
    run_callgate,
    run_pipecat_default,
    run_vad_baseline,
)

CACHE_DIR = ".eval_cache"


@dataclass
class EvalConfig:
    infer_ms: float = 64.0  # Smart-Turn answer arrives this long after it was asked (measured ~40-60 ms)
    stt_lag_ms: float = 250.0  # oracle STT: a word is known this long after it was spoken
    use_text: bool = True
    use_audio: bool = True


def load_set(folder: str | Path, limit: int | None = None, progress: bool = False) -> list[CallInputs]:
    """Every labelled call of a set (Silero results cached in folder/.eval_cache)."""
    folder = Path(folder)
    data = load_labels(folder)
    cache = folder / CACHE_DIR
    cache.mkdir(exist_ok=True)
    calls = []
    for k, (name, labels) in enumerate(sorted(data["files"].items())):
        if limit is not None and k >= limit:
            break
        st = (folder / name).stat()
        npz = cache / f"{name}.{st.st_size}.{int(st.st_mtime)}.v2.npz"
        if npz.is_file():
            z = np.load(npz)
            from callgate.audio import FRAME_SAMPLES, load_audio

            pcm = load_audio(folder / name)
            pcm = pcm[: len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES]
            call = CallInputs(name, pcm, labels, z["conf"], {"0.2": z["s02"].tolist(), "0.8": z["s08"].tolist()})
        else:
            call = load_call(folder, name, labels)
            np.savez(npz, conf=call.conf, s02=np.asarray(call.pipecat_states["0.2"], np.int8),
                     s08=np.asarray(call.pipecat_states["0.8"], np.int8))
        calls.append(call)
        if progress and (k + 1) % 20 == 0:
            print(f"  loaded {k + 1} calls", flush=True)
    return calls


class DiskSmartTurn(CachedSmartTurn):
    """CachedSmartTurn persisted as JSON in the set's cache folder."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.path = Path(folder) / CACHE_DIR / "smart_turn.v2.json"
        if self.path.is_file():
            try:
                for key, p in json.loads(self.path.read_text()).items():
                    session, name, a, b = key.split("|")
                    self.cache[(session, name, int(a), int(b))] = p
            except ValueError:
                self.cache = {}

    def save(self) -> None:
        self.path.write_text(json.dumps({"|".join(map(str, k)): v for k, v in self.cache.items()}))


def evaluate(
    calls: list[CallInputs],
    preset: ListenPreset,
    smart: CachedSmartTurn,
    text_model: TextCompletenessModel | None,
    cfg: EvalConfig | None = None,
    systems: tuple[str, ...] = SYSTEMS,
    progress: bool = False,
) -> dict[str, Summary]:
    """Every system on every call; `progress` shows a bar on a terminal (a cold Smart-Turn cache costs
    ~50 ms per pause: minutes on a few hundred calls)."""
    from tqdm import tqdm

    cfg = cfg or EvalConfig()
    tallies = {s: Tally() for s in systems}
    for c in tqdm(calls, desc="evaluating", unit="call", leave=False, disable=None if progress else True):
        for s in systems:
            if s == "callgate":
                run = run_callgate(c, smart, preset.gate, preset.endpointer, text_model if cfg.use_text else None,
                                   preset.vad, cfg.infer_ms, cfg.stt_lag_ms, cfg.use_audio)
            elif s == "timer_800ms":
                run = run_vad_baseline(c, "0.8")
            elif s == "pipecat_default":
                run = run_pipecat_default(c, smart, cfg.infer_ms)
            elif s == "vad_only":
                run = run_vad_baseline(c, "0.2")
            else:
                raise ValueError(f"unknown system {s!r} (have {', '.join(SYSTEMS)})")
            score_call(c.labels, run, tallies[s])
    return {s: summarize(s, t) for s, t in tallies.items()}


# --- trade-off curves ----------------------------------------------------------------------------


def patience(ep: EndpointerParams, k: float) -> EndpointerParams:
    """The endpointer made k times as patient (every silence it waits for scaled by k)."""
    return replace(
        ep,
        final_min_ms=ep.final_min_ms * k,
        backstop_default_ms=ep.backstop_default_ms * k,
        backstop_min_ms=ep.backstop_min_ms * k,
        backstop_max_ms=ep.backstop_max_ms * k,
        incomplete_ms=ep.incomplete_ms * k,
        text_wait_ms=ep.text_wait_ms * k,
        tentative_ms=ep.tentative_ms * k,
    )


def timer_curve(calls: list[CallInputs], timers_ms: list[float]) -> list[tuple[float, float, float]]:
    """(timer, median delay, premature rate on paused turns) for a plain silence timer on Pipecat's VAD."""
    from turn_eval.runner import QUIET, SPEAKING, SystemRun

    out = []
    for timer in timers_ms:
        t = Tally()
        for c in calls:
            run = SystemRun()
            speaking, quiet_at = False, None
            for i, s in enumerate(c.pipecat_states["0.2"]):
                now = (i + 1) * 20.0
                if quiet_at is not None and now >= quiet_at + timer - 200:
                    run.ends.append(now)
                    quiet_at = None
                if not speaking and s == SPEAKING:
                    speaking = True
                    if quiet_at is None:
                        run.starts.append((now, now - 200))
                    quiet_at = None
                elif speaking and s == QUIET:
                    speaking, quiet_at = False, now
            score_call(c.labels, run, t)
        r = summarize("timer", t)
        out.append((timer, r.delay_p50_ms, r.premature_paused))
    return out


def callgate_curve(
    calls: list[CallInputs], preset: ListenPreset, smart: CachedSmartTurn, text_model: TextCompletenessModel | None,
    cfg: EvalConfig, factors: list[float],
) -> list[tuple[float, float, float]]:
    out = []
    for k in factors:
        p = ListenPreset(preset.vad, preset.gate, patience(preset.endpointer, k))
        r = evaluate(calls, p, smart, text_model, cfg, ("callgate",))["callgate"]
        out.append((k, r.delay_p50_ms, r.premature_paused))
    return out


def plot_tradeoff(
    path: str | Path, curves: dict[str, list[tuple[float, float, float]]], points: dict[str, Summary]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, pts in curves.items():
        ax.plot([p[1] for p in pts], [100 * p[2] for p in pts], marker="o", label=name)
        for p in pts:
            ax.annotate(f"{p[0]:g}", (p[1], 100 * p[2]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, s in points.items():
        ax.scatter([s.delay_p50_ms], [100 * s.premature_paused], marker="*", s=150, label=f"{name} (as shipped)")
    ax.axvline(300, color="grey", ls=":", lw=1)
    ax.axhline(5, color="grey", ls=":", lw=1)
    ax.set_xlabel("median end-of-turn delay after the true end (ms)")
    ax.set_ylabel("premature ends, turns with inner pauses (%)")
    ax.set_title("End-of-turn trade-off")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- tuning --------------------------------------------------------------------------------------


def objective(s: Summary, delay_target_ms: float = 300.0) -> float:
    """Lower is better: premature ends on paused turns, with the acceptance bars as steep penalties.

    `delay_target_ms` below the 300 ms bar leaves a margin for the split the preset was not tuned on."""
    pen = 0.0
    pen += max(0.0, s.delay_p50_ms - delay_target_ms) / 100
    pen += max(0.0, s.bg_started - 0.10) * 10
    pen += max(0.0, s.caller_lost_pct - 2.0)
    pen += 2 * s.gate_delayed_starts / max(s.turns, 1)
    pen += 0.5 * s.missed_starts / max(s.turns, 1)
    return s.premature_paused + 0.2 * s.premature_all + pen + s.delay_p50_ms / 10000


GATE_SPACE = {
    "open_offset_db": (2.0, 9.0), "hold_offset_db": (8.0, 20.0), "grace_db": (0.0, 8.0), "percentile": (75.0, 97.0),
    "fallback_dbfs": (-42.0, -32.0), "close_ms": (150.0, 400.0), "media_extra_db": (0.0, 4.0),
    "lookback_ms": (200.0, 1200.0), "media_on_frac": (0.1, 0.6),
    # the two-stage opening (confirm_ms 0 = one stage; confirm_windows is rounded down)
    "confirm_ms": (0.0, 900.0), "tentative_db": (0.0, 5.0), "confirm_windows": (1.0, 4.99), "confirm_extra_db": (-3.0, 2.0),
    "confirm_quiet_db": (0.0, 4.0),
}
ENDPOINT_SPACE = {
    "audio_weight": (0.0, 1.5), "text_weight": (0.3, 2.0), "combine_bias": (-2.0, 2.0), "p_high": (0.5, 0.98),
    "p_low": (0.1, 0.5), "p_unfinished": (0.01, 0.1), "final_min_ms": (150.0, 400.0), "backstop_margin_ms": (0.0, 600.0),
    "backstop_min_ms": (500.0, 1500.0), "incomplete_ms": (1200.0, 3000.0), "text_wait_ms": (250.0, 900.0),
}


def tune(
    calls: list[CallInputs], base: ListenPreset, smart: CachedSmartTurn, text_model: TextCompletenessModel | None,
    cfg: EvalConfig, trials: int = 60, seed: int = 0, what: str = "both", delay_target_ms: float = 300.0,
) -> tuple[ListenPreset, Summary, list[dict[str, Any]]]:
    """Optuna TPE over the gate and/or endpointer parameters (the `callgate tune` library), from the base.

    (`tentative_p` is not searched: no figure here depends on it; it trades LLM requests for reply time.)"""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    g0, e0 = base.gate.to_dict(), base.endpointer.to_dict()
    study.enqueue_trial({**({k: g0[k] for k in GATE_SPACE} if what != "endpointer" else {}),
                         **({k: e0[k] for k in ENDPOINT_SPACE} if what != "gate" else {})})
    history: list[dict[str, Any]] = []

    def build(trial: optuna.Trial) -> ListenPreset:
        g, e = dict(g0), dict(e0)
        if what != "endpointer":
            for k, (lo, hi) in GATE_SPACE.items():
                g[k] = trial.suggest_float(k, lo, hi)
        if what != "gate":
            for k, (lo, hi) in ENDPOINT_SPACE.items():
                e[k] = trial.suggest_float(k, lo, hi)
        return ListenPreset(base.vad, GateParams.from_dict(g), EndpointerParams.from_dict(e))

    def run(trial: optuna.Trial) -> float:
        p = build(trial)
        s = evaluate(calls, p, smart, text_model, cfg, ("callgate",))["callgate"]
        v = objective(s, delay_target_ms)
        history.append({"trial": trial.number, "objective": v, **s.to_dict()})
        return v if math.isfinite(v) else 1e9

    study.optimize(run, n_trials=trials)
    best = build(study.best_trial)
    s = evaluate(calls, best, smart, text_model, cfg, ("callgate",))["callgate"]
    return best, s, history


def write_preset(path: str | Path, workflow: str, preset: ListenPreset, summary: Summary, source: str) -> Path:
    path = Path(path)
    doc = json.loads(path.read_text()) if path.is_file() else {"version": 1, "workflows": {}}
    rnd = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in preset.gate.to_dict().items()}
    rnd_e = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in preset.endpointer.to_dict().items()}
    doc.setdefault("workflows", {})[workflow] = {
        "_tuned": {"set": source, "turns": summary.turns, "delay_p50_ms": round(summary.delay_p50_ms),
                   "premature_paused": round(summary.premature_paused, 4), "bg_started": round(summary.bg_started, 4),
                   "caller_lost_pct": round(summary.caller_lost_pct, 2)},
        "vad": preset.vad, "gate": rnd, "endpointer": rnd_e,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
