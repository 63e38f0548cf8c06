"""`callgate tune`: search a workflow's detector parameters on recorded traces (optuna NSGA-II).

Every candidate preset is scored by replaying each trace through the production DecisionLayer
(`replay_trace`), on three objectives: precision of "human", recall of "human", and median decision
latency (correct human verdicts timed from the end of the first utterance, correct machine verdicts
from speech onset); workflows picked by accuracy use (accuracy, latency) instead. The Pareto front is
printed; one point is picked by the workflow's rule:

- parallel_dial (precision first): max human recall subject to human precision >= 0.99;
- power_dial (recall first): max human precision subject to human recall >= 0.99;
- any other workflow: max accuracy with median human latency <= 500 ms (after the utterance) and
  median machine latency <= 900 ms (after speech onset), the issue's bars;
ties -> higher accuracy (so a preset that leaves machines undecided loses), then lower latency.
When no point meets the bound, it is relaxed to within FALLBACK_SLACK of the best reachable value and
the rule is applied to those points (and we say so).

The two dialing presets must also stay *ordered* on the same traces: the precision preset
(parallel_dial) never makes more false "human" verdicts than the recall preset (power_dial), and the
recall preset never makes more false "machine" verdicts. Tuning one of them therefore only accepts
points ordered against the other as currently stored; the stored counterpart itself is always a
candidate, so the order can always be kept.

Searched per detector (label human/machine/ivr/carrier_intercept; timers and `unknown` detectors are
kept; `only` narrows it to named detectors): threshold, window_ms, min_delay_ms, and
requires_silence_ms where the detector has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amd_model.traces import Trace, replay_trace
from processors.amd_decision import (
    DEFAULT_PRESETS_PATH,
    DetectorConfig,
    dump_presets,
    parse_presets,
    preset_to_json,
)

NO_LATENCY_MS = 10_000.0  # latency objective when a preset makes no correct decisive verdict
COUNTERPART = {"parallel_dial": "power_dial", "power_dial": "parallel_dial"}
TUNED_LABELS = ("human", "machine", "ivr", "carrier_intercept")


class TuningDependencyError(ImportError):
    """optuna / matplotlib are missing (they come with the `tune` extra)."""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise TuningDependencyError(
            f"`callgate tune` needs {module}: pip install 'callgate[tune]' (or pip install optuna matplotlib)"
        ) from e


@dataclass(frozen=True)
class Rule:
    """How a workflow picks its point: bound one human metric, maximise the other."""

    kind: str  # "precision" | "recall" | "accuracy"
    bound: float = 0.99
    max_human_latency_ms: float | None = None  # caps on the medians (None = no cap)
    max_machine_latency_ms: float | None = None

    def latency_excess(self, s: PresetStats) -> float:
        """How far (ms, summed) the medians exceed the caps; 0 when within them."""
        out = 0.0
        for cap, v in (
            (self.max_human_latency_ms, s.human_latency_p50_ms),
            (self.max_machine_latency_ms, s.machine_latency_p50_ms),
        ):
            if cap is not None and v is not None:
                out += max(0.0, v - cap)
        return out


# Accuracy-picked workflows keep the latency bars (human <= 500 ms after the utterance ends,
# machine <= 900 ms after speech onset), or tuning would buy accuracy with seconds of waiting.
RULES: dict[str, Rule] = {"parallel_dial": Rule("precision"), "power_dial": Rule("recall")}
ACCURACY_RULE = Rule("accuracy", max_human_latency_ms=500, max_machine_latency_ms=900)


def rule_for(
    workflow: str,
    bound: float | None = None,
    max_human_latency_ms: float | None = None,
    max_machine_latency_ms: float | None = None,
) -> Rule:
    r = RULES.get(workflow, ACCURACY_RULE)
    return Rule(
        r.kind,
        r.bound if bound is None else bound,
        r.max_human_latency_ms if max_human_latency_ms is None else max_human_latency_ms,
        r.max_machine_latency_ms if max_machine_latency_ms is None else max_machine_latency_ms,
    )


@dataclass
class PresetStats:
    """How one preset does on a set of traces."""

    n: int
    correct: int
    human_tp: int
    false_human: int  # said human, was not
    missed_human: int  # was human, said something else
    false_machine: int  # said machine, was not
    unknown: int
    latency_p50_ms: float
    human_latency_p50_ms: float | None
    machine_latency_p50_ms: float | None = None

    @property
    def precision(self) -> float:
        said = self.human_tp + self.false_human
        return self.human_tp / said if said else 1.0

    @property
    def recall(self) -> float:
        actual = self.human_tp + self.missed_human
        return self.human_tp / actual if actual else 1.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.n,
            "accuracy": round(self.accuracy, 4),
            "human_precision": round(self.precision, 4),
            "human_recall": round(self.recall, 4),
            "false_human": self.false_human,
            "false_machine": self.false_machine,
            "unknown": self.unknown,
            "latency_p50_ms": self.latency_p50_ms,
        }


def score_preset(traces: Sequence[Trace], detectors: Sequence[DetectorConfig]) -> PresetStats:
    """Replay every labelled trace through the DecisionLayer with these detectors."""
    correct = tp = fh = mh = fm = unk = 0
    lat: list[float] = []
    hlat: list[float] = []
    mlat: list[float] = []
    n = 0
    for tr in traces:
        if tr.label is None:
            continue
        n += 1
        v = replay_trace(tr, detectors)
        truth = tr.label
        correct += v.label == truth
        unk += v.label == "unknown"
        if v.label == "human":
            if truth == "human":
                tp += 1
            else:
                fh += 1
        elif truth == "human":
            mh += 1
        if v.label == "machine" and truth != "machine":
            fm += 1
        if v.label == truth and v.label in ("human", "machine"):
            anchor = tr.first_utterance_end_ms if v.label == "human" else tr.speech_onset_ms
            x = v.t_ms - anchor if anchor is not None else v.t_ms
            lat.append(x)
            (hlat if v.label == "human" else mlat).append(x)
    return PresetStats(
        n=n,
        correct=correct,
        human_tp=tp,
        false_human=fh,
        missed_human=mh,
        false_machine=fm,
        unknown=unk,
        latency_p50_ms=float(np.median(lat)) if lat else NO_LATENCY_MS,
        human_latency_p50_ms=float(np.median(hlat)) if hlat else None,
        machine_latency_p50_ms=float(np.median(mlat)) if mlat else None,
    )


@dataclass
class Candidate:
    """One evaluated preset (an optuna trial, or a stored preset offered as-is)."""

    number: int  # optuna trial number (0 = the base preset, enqueued first); -2 = the counterpart
    detectors: list[DetectorConfig]
    stats: PresetStats
    ordered: bool = True  # keeps the parallel/power ordering against the counterpart
    on_front: bool = False

    @property
    def origin(self) -> str:
        if self.number == 0:
            return "base preset"
        return "counterpart" if self.number < 0 else f"trial {self.number}"


@dataclass
class TuneResult:
    workflow: str
    rule: Rule
    candidates: list[Candidate]
    chosen: Candidate
    rule_met: bool
    order_met: bool
    counterpart: PresetStats | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def front(self) -> list[Candidate]:
        return [c for c in self.candidates if c.on_front]


def _space(
    base: Sequence[DetectorConfig], only: Sequence[str] | None = None
) -> dict[str, tuple[str, float, float, float | None]]:
    """param name -> (kind, low, high, step), widened to contain the base values.

    `only` limits the search to the named detectors (the rest keep their values): NSGA-II finds much
    better points in a 10-dimensional space than in a 40-dimensional one."""
    names = {d.name for d in base}
    unknown = sorted(set(only or ()) - names)
    if unknown:
        raise ValueError(f"no detector named {', '.join(unknown)} (have: {', '.join(d.name for d in base)})")
    space: dict[str, tuple[str, float, float, float | None]] = {}
    for d in base:
        if d.label not in TUNED_LABELS or not d.classes or (only and d.name not in only):
            continue
        space[f"{d.name}.threshold"] = ("float", min(0.3, d.threshold), max(0.995, d.threshold), None)
        space[f"{d.name}.window_ms"] = ("int", 100, max(1500, d.window_ms), 100)
        space[f"{d.name}.min_delay_ms"] = ("int", 0, max(3000, d.min_delay_ms), 100)
        if d.requires_silence_ms is not None:
            space[f"{d.name}.requires_silence_ms"] = ("int", 0, max(1500, d.requires_silence_ms), 100)
        if d.max_wait_ms is not None:
            space[f"{d.name}.max_wait_ms"] = ("int", 300, max(4000, d.max_wait_ms), 100)
    return space


NEIGHBOUR_STEPS = {"float": 0.03, "int": 100}


def _neighbours(base_params: dict[str, Any], space: dict[str, Any]) -> list[dict[str, Any]]:
    """The base preset with one parameter moved one step either way (within its range).

    Why: NSGA-II samples the whole box, so with a dozen parameters it rarely lands next to a preset
    that is already good; seeding these lets the first generations refine it instead."""
    out = []
    for name, (kind, lo, hi, step) in space.items():
        delta = step or NEIGHBOUR_STEPS[kind]
        for sign in (-1, 1):
            v = base_params[name] + sign * delta
            if lo <= v <= hi:
                out.append({**base_params, name: round(v, 4) if kind == "float" else int(v)})
    return out


def _apply(base: Sequence[DetectorConfig], params: dict[str, Any]) -> list[DetectorConfig]:
    out = []
    for d in base:
        upd = {k.split(".", 1)[1]: v for k, v in params.items() if k.split(".", 1)[0] == d.name}
        out.append(d.model_copy(update=upd) if upd else d)
    return [DetectorConfig.model_validate(d.model_dump()) for d in out]


def _base_params(base: Sequence[DetectorConfig], space: dict[str, Any]) -> dict[str, Any]:
    by_name = {d.name: d for d in base}
    return {k: getattr(by_name[k.split(".", 1)[0]], k.split(".", 1)[1]) for k in space}


def _is_ordered(workflow: str, s: PresetStats, other: PresetStats | None) -> bool:
    if other is None:
        return True
    if workflow == "parallel_dial":  # we are the precision preset
        return s.false_human <= other.false_human and s.false_machine >= other.false_machine
    if workflow == "power_dial":  # we are the recall preset
        return s.false_machine <= other.false_machine and s.false_human >= other.false_human
    return True


FALLBACK_SLACK = 0.02  # how far below the best reachable precision/recall an unreachable bound relaxes


def _pick(rule: Rule, cands: Sequence[Candidate]) -> tuple[Candidate, bool]:
    """The rule's choice among candidates, and whether its bound and latency caps were met.

    Latency caps filter first (when nobody meets them, the candidates closest to them stay), then the
    bounded metric, then the maximised one; ties -> accuracy, then median latency."""

    def lat(c: Candidate) -> float:
        return -c.stats.latency_p50_ms

    def acc(c: Candidate) -> float:
        return c.stats.accuracy

    least = min(rule.latency_excess(c.stats) for c in cands)
    in_time = least == 0
    cands = [c for c in cands if rule.latency_excess(c.stats) == least]
    if rule.kind in ("precision", "recall"):
        bounded = (lambda c: c.stats.precision) if rule.kind == "precision" else (lambda c: c.stats.recall)
        other = (lambda c: c.stats.recall) if rule.kind == "precision" else (lambda c: c.stats.precision)
        ok = [c for c in cands if bounded(c) >= rule.bound]
        if ok:
            return max(ok, key=lambda c: (other(c), acc(c), lat(c))), in_time
        # Bound out of reach: relax it to just under the best reachable value rather than take the single
        # most extreme point, which trades everything else away for the last fraction of a percent.
        reach = max(bounded(c) for c in cands) - FALLBACK_SLACK
        near = [c for c in cands if bounded(c) >= reach]
        return max(near, key=lambda c: (other(c), bounded(c), acc(c), lat(c))), False
    return max(cands, key=lambda c: (c.stats.accuracy, lat(c))), in_time


def objectives(rule: Rule, s: PresetStats) -> tuple[float, ...]:
    """What NSGA-II optimises, all to maximise: the dialing workflows trade human precision, human
    recall and latency; workflows picked by accuracy trade accuracy and latency."""
    if rule.kind == "accuracy":
        return s.accuracy, -s.latency_p50_ms
    return s.precision, s.recall, -s.latency_p50_ms


def _pareto(rule: Rule, cands: Sequence[Candidate]) -> None:
    """Mark the non-dominated candidates on the rule's objectives."""
    pts = [objectives(rule, c.stats) for c in cands]
    for i, c in enumerate(cands):
        p = pts[i]
        c.on_front = not any(
            all(a >= b for a, b in zip(q, p, strict=True)) and any(a > b for a, b in zip(q, p, strict=True))
            for q in pts
        )


def tune(
    traces: Sequence[Trace],
    workflow: str,
    base: Sequence[DetectorConfig],
    *,
    counterpart: Sequence[DetectorConfig] | None = None,
    trials: int = 200,
    seed: int = 0,
    population_size: int | None = None,
    bound: float | None = None,
    max_human_latency_ms: float | None = None,
    max_machine_latency_ms: float | None = None,
    only: Sequence[str] | None = None,
    progress: bool = False,
    on_trial: Callable[[int, PresetStats], None] | None = None,
) -> TuneResult:
    """Run NSGA-II over the base preset's parameters and pick a point by the workflow's rule."""
    optuna = _require("optuna")
    labelled = [t for t in traces if t.label is not None]
    if not labelled:
        raise ValueError("no labelled traces to tune on (a trace needs `label`)")
    for tr in labelled:
        tr.step_dicts()  # build once, reused by every trial
    rule = rule_for(workflow, bound, max_human_latency_ms, max_machine_latency_ms)
    space = _space(base, only)
    if not space:
        raise ValueError(f"workflow {workflow!r} has no tunable detectors")
    other = score_preset(labelled, counterpart) if counterpart else None

    def objective(trial: Any) -> tuple[float, ...]:
        params: dict[str, Any] = {}
        for name, (kind, lo, hi, step) in space.items():
            if kind == "float":
                params[name] = trial.suggest_float(name, lo, hi)
            else:
                params[name] = trial.suggest_int(name, int(lo), int(hi), step=int(step or 1))
        stats = score_preset(labelled, _apply(base, params))
        trial.set_user_attr("stats", stats.__dict__)
        if hasattr(trial, "set_constraint"):  # optuna >= 5; older ones call constraints_func
            for k, v in enumerate(constraint_values(stats)):
                trial.set_constraint(f"c{k}", v)
        if on_trial:
            on_trial(trial.number, stats)
        return objectives(rule, stats)

    def constraint_values(s: PresetStats) -> list[float]:
        """<= 0 is feasible: the rule's bound, and the ordering against the counterpart."""
        c = []
        if rule.kind == "precision":
            c.append(rule.bound - s.precision)
        elif rule.kind == "recall":
            c.append(rule.bound - s.recall)
        if rule.max_human_latency_ms is not None or rule.max_machine_latency_ms is not None:
            c.append(rule.latency_excess(s) / 1000.0)
        if other is not None:
            ordered = _is_ordered(workflow, s, other)
            c.append(0.0 if ordered else 1.0)
        return c or [0.0]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pop = population_size or max(8, min(50, trials // 4))
    extra: dict[str, Any] = {}
    if not hasattr(optuna.trial.Trial, "set_constraint"):
        extra["constraints_func"] = lambda t: constraint_values(PresetStats(**t.user_attrs["stats"]))
    sampler = optuna.samplers.NSGAIISampler(population_size=pop, seed=seed, **extra)
    n_obj = len(objectives(rule, PresetStats(0, 0, 0, 0, 0, 0, 0, 0.0, None)))
    study = optuna.create_study(directions=["maximize"] * n_obj, sampler=sampler)
    base_params = _base_params(base, space)
    study.enqueue_trial(base_params)
    for params in _neighbours(base_params, space)[: max(0, trials // 3)]:
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=trials, show_progress_bar=progress)

    cands = [
        Candidate(t.number, _apply(base, t.params), PresetStats(**t.user_attrs["stats"]))
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    if counterpart:
        cands.append(
            Candidate(-2, [DetectorConfig.model_validate(d.model_dump()) for d in counterpart], other)
        )  # type: ignore[arg-type]
    for c in cands:
        c.ordered = _is_ordered(workflow, c.stats, other)
    _pareto(rule, cands)
    notes = []
    pool = [c for c in cands if c.ordered]
    order_met = bool(pool)
    if not pool:  # cannot happen while the counterpart is a candidate; kept for safety
        notes.append("no candidate keeps the parallel/power ordering; ignoring it")
        pool = cands
    chosen, rule_met = _pick(rule, pool)
    if not rule_met:
        notes.append(
            "no candidate meets the rule's bound and latency caps; relaxed the bound to within "
            f"{FALLBACK_SLACK:.2f} of the best reachable value"
        )
    return TuneResult(workflow, rule, cands, chosen, rule_met, order_met, other, notes)


# --- output ---------------------------------------------------------------------------------------


def format_front(result: TuneResult, limit: int = 40) -> str:
    """The Pareto front as an aligned table (chosen point marked *)."""
    front = sorted(result.front, key=lambda c: (-c.stats.precision, -c.stats.recall, c.stats.latency_p50_ms))
    if result.chosen not in front:
        front.append(result.chosen)
    head = f"{'':2}{'candidate':<13}{'h.prec':>8}{'h.recall':>9}{'lat p50':>9}{'acc':>8}{'false h':>9}{'false m':>9}{'unknown':>9}"
    lines = [
        f"Pareto front ({len(result.front)} of {len(result.candidates)} candidates), workflow {result.workflow}",
        head,
        "-" * len(head),
    ]
    for c in front[:limit]:
        s = c.stats
        mark = "*" if c is result.chosen else ("~" if not c.ordered else "")
        lines.append(
            f"{mark:2}{c.origin:<13}{s.precision:>8.3f}{s.recall:>9.3f}{s.latency_p50_ms:>9.0f}"
            f"{s.accuracy:>8.3f}{s.false_human:>9}{s.false_machine:>9}{s.unknown:>9}"
        )
    if len(front) > limit:
        lines.append(f"  ... {len(front) - limit} more")
    r = result.rule
    rule_txt = {
        "precision": f"max human recall with human precision >= {r.bound}",
        "recall": f"max human precision with human recall >= {r.bound}",
        "accuracy": "max accuracy",
    }[r.kind]
    caps = [
        f"{k} median <= {v:.0f} ms"
        for k, v in (("human", r.max_human_latency_ms), ("machine", r.max_machine_latency_ms))
        if v is not None
    ]
    if caps:
        rule_txt += " and " + " and ".join(caps)
    lines.append(
        f"rule: {rule_txt}; ties -> accuracy, then latency"
        + ("; ~ = breaks the parallel/power ordering" if result.counterpart else "")
    )
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


def write_preset(
    path: str | Path,
    workflow: str,
    result: TuneResult,
    *,
    template: str | Path | None = None,
    traces: str = "",
) -> Path:
    """Replace one workflow's detectors in a presets file (created from the template if missing)."""
    path = Path(path)
    src = path if path.is_file() else Path(template or DEFAULT_PRESETS_PATH)
    doc = json.loads(src.read_text()) if src.is_file() else {"version": 1, "workflows": {}}
    doc.setdefault("workflows", {})
    spec = dict(doc["workflows"].get(workflow) or {})
    spec["_tuned"] = {"traces": traces, "rule_met": result.rule_met, **result.chosen.stats.to_dict()}
    spec["detectors"] = preset_to_json(result.chosen.detectors)
    doc["workflows"][workflow] = spec
    parse_presets(doc)  # never write a file load_presets would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_presets(doc))
    return path


def plot_tradeoff(result: TuneResult, path: str | Path) -> Path:
    """PNG: precision vs recall (colour = latency) and latency vs recall; front ringed, choice starred."""
    _require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = result.candidates
    prec = np.array([c.stats.precision for c in cs])
    rec = np.array([c.stats.recall for c in cs])
    lat = np.array([c.stats.latency_p50_ms for c in cs])
    front = np.array([c.on_front for c in cs])
    ch = result.chosen.stats
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    sc = a1.scatter(rec, prec, c=lat, cmap="viridis", s=14, alpha=0.6)
    a1.scatter(
        rec[front], prec[front], facecolors="none", edgecolors="k", s=40, linewidths=0.8, label="Pareto front"
    )
    a1.scatter([ch.recall], [ch.precision], marker="*", c="red", s=220, label="chosen")
    a1.set_xlabel("human recall")
    a1.set_ylabel("human precision")
    a1.legend(loc="lower left")
    fig.colorbar(sc, ax=a1, label="median latency (ms)")
    by_acc = result.rule.kind == "accuracy"
    x2 = np.array([c.stats.accuracy for c in cs]) if by_acc else rec
    a2.scatter(x2, lat, c="0.6", s=12, alpha=0.6)
    a2.scatter(x2[front], lat[front], facecolors="none", edgecolors="k", s=40, linewidths=0.8)
    a2.scatter([ch.accuracy if by_acc else ch.recall], [ch.latency_p50_ms], marker="*", c="red", s=220)
    a2.set_xlabel("accuracy" if by_acc else "human recall")
    a2.set_ylabel("median latency (ms)")
    fig.suptitle(f"AMD trade-off, workflow {result.workflow} ({ch.n} traces, {len(cs)} candidates)")
    fig.tight_layout()
    path = Path(path)
    if not path.suffix:  # savefig would add .png itself: return the name it writes
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
