"""`callgate eval`: our AMD (model + decision layer) and the Asterisk app_amd baseline on the same files.

Each call goes through exactly what production runs: the model's 100 ms steps, the speech events the
live SpeechDetector would emit (its own SpeechAnalyzer class, fed the same 20 ms chunks), then
`replay_trace` -> the production `DecisionLayer`. So `--traces` writes the same traces
a live call would, ready for `callgate tune`.

Latency (the issue's definitions): a human verdict is timed from the end of the caller's first
utterance, a machine verdict from speech onset; both over correct verdicts only. Anchors come from
meta.jsonl when present, else from the VAD. Files that end before a decision are continued with quiet
line noise (a live call keeps streaming), for both sides alike.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amd_model.tools.asterisk_baseline import AsteriskAmdConfig, quiet_line, run_asterisk_amd
from amd_model.traces import SpeechEvent, Trace, at_step_for, replay_trace, save_trace
from callgate.audio import SAMPLE_RATE, load_audio
from processors.amd_decision import STEP_MS, VERDICT_LABELS, DetectorConfig, Verdict

CHUNK_SAMPLES = 160  # 20 ms, as Twilio delivers audio
MIN_CALL_MS = 8000  # evaluate at least this much audio per call (padding with quiet line noise)


@dataclass
class LabelledCall:
    """One row of labels.csv, enriched from meta.jsonl when it has the file."""

    file: str
    path: Path
    label: str
    subtype: str | None = None
    split: str | None = None
    beep_onset_ms: float | None = None
    speech_onset_ms: float | None = None
    first_utterance_end_ms: float | None = None


@dataclass
class CallResult:
    """Both verdicts for one call, with the latency anchors used."""

    call: LabelledCall
    ours: Verdict
    baseline: Verdict
    speech_onset_ms: float | None
    first_utterance_end_ms: float | None


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def read_labels(
    directory: str | Path,
    labels_path: str | Path | None = None,
    meta_path: str | Path | None = None,
    split: str | None = None,
) -> list[LabelledCall]:
    """labels.csv (`file,label[,beep_onset_ms,...]`, extra columns ignored) + optional meta.jsonl."""
    directory = Path(directory)
    labels_path = Path(labels_path) if labels_path else directory / "labels.csv"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: no labels.csv (columns: file,label[,beep_onset_ms])")
    meta_path = Path(meta_path) if meta_path else labels_path.parent / "meta.jsonl"
    metas: dict[str, dict[str, Any]] = {}
    if meta_path.is_file():
        for line in meta_path.read_text().splitlines():
            if line.strip():
                m = json.loads(line)
                metas[str(m.get("file"))] = m
    calls = []
    with open(labels_path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "file" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{labels_path}: needs a header with at least 'file' and 'label'")
        for row in reader:
            name = (row.get("file") or "").strip()
            label = (row.get("label") or "").strip()
            if not name:
                continue
            if label not in VERDICT_LABELS:
                raise ValueError(
                    f"{labels_path}: {name}: unknown label {label!r} (want {', '.join(VERDICT_LABELS)})"
                )
            m = metas.get(name) or metas.get(Path(name).name) or {}
            call = LabelledCall(
                file=name,
                path=directory / name,
                label=label,
                subtype=row.get("subtype") or m.get("subtype"),
                split=row.get("split") or m.get("split"),
                beep_onset_ms=_num(row.get("beep_onset_ms"))
                if row.get("beep_onset_ms")
                else _num(m.get("beep_onset_ms")),
                speech_onset_ms=_num(m.get("speech_onset_ms")),
                first_utterance_end_ms=_num(m.get("first_utterance_end_ms")),
            )
            if split is None or call.split == split:
                calls.append(call)
    return calls


class OfflineSpeechDetector:
    """The live SpeechDetector without the pipeline: a fresh `processors.speech.SpeechAnalyzer` per
    call (what each live call gets), fed the same 20 ms chunks.

    Returns (event, t_ms, known_at_ms): known_at_ms is the audio time at which the live detector
    pushes the frame (end of the chunk whose analysis produced the event).
    """

    def events(self, pcm: np.ndarray) -> list[tuple[str, float, float]]:
        from processors.speech import SpeechAnalyzer

        analyzer = SpeechAnalyzer(report_candidates=True)
        out: list[tuple[str, float, float]] = []
        pcm = np.asarray(pcm, dtype=np.int16)
        for i in range(0, pcm.size - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
            known_at = (i + CHUNK_SAMPLES) * 1000 / SAMPLE_RATE
            for ev in analyzer.process(pcm[i : i + CHUNK_SAMPLES]):
                out.append((ev.kind, float(ev.t_ms), known_at))
        return out


def call_ms(detectors: Sequence[DetectorConfig]) -> int:
    """How much audio each call is evaluated on: MIN_CALL_MS, or 1 s past the latest timer detector
    (a detector with no classes fires on time alone, so the call must last until it can)."""
    return max([MIN_CALL_MS] + [d.min_delay_ms + 1000 for d in detectors if not d.classes])


def pad_call(pcm: np.ndarray, min_ms: int = MIN_CALL_MS, seed: int = 0) -> np.ndarray:
    """Continue a short file with quiet line noise up to min_ms."""
    need = min_ms * SAMPLE_RATE // 1000 - pcm.size
    return np.concatenate([pcm, quiet_line(need, seed)]) if need > 0 else pcm


def build_trace(
    call_id: str,
    classes: Sequence[str],
    probs: np.ndarray,
    speech: Iterable[tuple[str, float, float]],
    *,
    workflow: str | None = None,
    call: LabelledCall | None = None,
) -> Trace:
    """An offline trace in the live format (steps as the exact floats a live call would carry)."""
    steps = [[float((i + 1) * STEP_MS), *(float(p) for p in row)] for i, row in enumerate(np.asarray(probs))]
    truth: dict[str, Any] = {}
    if call is not None:
        for key in ("speech_onset_ms", "first_utterance_end_ms", "beep_onset_ms"):
            if getattr(call, key) is not None:
                truth[key] = getattr(call, key)
    return Trace(
        call_id=call_id,
        classes=list(classes),
        steps=steps,
        speech=[SpeechEvent(ev, t, at_step_for(known)) for ev, t, known in speech],
        workflow=workflow,
        label=call.label if call else None,
        subtype=call.subtype if call else None,
        truth=truth,
        source=str(call.path) if call else None,
    )


def evaluate_call(
    call: LabelledCall,
    model: Any,
    vad: OfflineSpeechDetector,
    detectors: Sequence[DetectorConfig],
    *,
    workflow: str = "default",
    asterisk: AsteriskAmdConfig | None = None,
) -> tuple[CallResult, Trace]:
    """Both systems on one call; the trace is what a live call of this audio would record."""
    pcm = pad_call(load_audio(call.path), call_ms(detectors))
    speech = vad.events(pcm)
    trace = build_trace(
        Path(call.file).stem, model.classes, model.run(pcm), speech, workflow=workflow, call=call
    )
    ours = replay_trace(trace, detectors)
    trace.verdicts = [ours.to_dict() | {"workflow": workflow}]
    ast = run_asterisk_amd(pcm, asterisk)
    baseline = Verdict(ast.label, 1.0, float(ast.t_ms), ast.cause)
    return CallResult(call, ours, baseline, trace.speech_onset_ms, trace.first_utterance_end_ms), trace


_WORKER: dict[str, Any] = {}


def _worker_init(model_path: str | None, detectors: list[dict[str, Any]], workflow: str) -> None:
    from loguru import logger

    from amd_model.runtime import AmdModel

    logger.remove()
    _WORKER.update(
        model=AmdModel(Path(model_path) if model_path else None),
        vad=OfflineSpeechDetector(),
        detectors=[DetectorConfig.model_validate(d) for d in detectors],
        workflow=workflow,
    )


def _worker_call(call: LabelledCall) -> tuple[CallResult, Trace]:
    w = _WORKER
    return evaluate_call(call, w["model"], w["vad"], w["detectors"], workflow=w["workflow"])


def evaluate_calls(
    calls: Sequence[LabelledCall],
    model: Any,
    detectors: Sequence[DetectorConfig],
    *,
    workflow: str = "default",
    traces_dir: str | Path | None = None,
    progress: bool = True,
    jobs: int = 1,
    model_path: str | Path | None = None,
) -> list[CallResult]:
    """Run both systems over every call (in order); optionally save each call's trace.

    `jobs` > 1 uses a spawn process pool (each worker loads its own model, Silero and decision
    layer; ONNX stays single-threaded per worker) and needs `model_path` semantics of AmdModel.
    """
    from tqdm import tqdm

    def keep(trace: Trace, call: LabelledCall) -> None:
        if traces_dir is not None:
            save_trace(trace, Path(traces_dir) / f"{_trace_name(call.file)}.json")

    results: list[CallResult] = []
    bar = tqdm(total=len(calls), desc="eval", unit="call", disable=not progress)
    if jobs <= 1:
        vad = OfflineSpeechDetector()
        for call in calls:
            res, trace = evaluate_call(call, model, vad, detectors, workflow=workflow)
            keep(trace, call)
            results.append(res)
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        init = (str(model_path) if model_path else None, [d.model_dump() for d in detectors], workflow)
        with ProcessPoolExecutor(
            jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=init
        ) as ex:
            for call, (res, trace) in zip(calls, ex.map(_worker_call, calls, chunksize=4), strict=True):
                keep(trace, call)
                results.append(res)
                bar.update()
    bar.close()
    return results


def _trace_name(file: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(Path(file).with_suffix("")))


# --- metrics --------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def latency_ms(verdict: Verdict, onset: float | None, utt_end: float | None) -> float | None:
    """Decision latency by the issue's definitions: human from first-utterance end, else from onset."""
    if verdict.label == "human":
        return verdict.t_ms - utt_end if utt_end is not None else None
    if verdict.label in ("machine", "ivr", "carrier_intercept"):
        return verdict.t_ms - onset if onset is not None else None
    return None


def metrics(results: Sequence[CallResult], side: str) -> dict[str, Any]:
    """Accuracy, per-class precision/recall, confusion, latency percentiles, business-pickup rate."""
    pairs = [(r.call.label, getattr(r, side)) for r in results]
    n = len(pairs)
    labels = [lab for lab in VERDICT_LABELS if any(t == lab or v.label == lab for t, v in pairs)]
    confusion = {t: {p: 0 for p in labels} for t in labels}
    for t, v in pairs:
        confusion[t][v.label] += 1
    per_class = {}
    for lab in labels:
        tp = confusion[lab][lab]
        predicted = sum(confusion[t][lab] for t in labels)
        actual = sum(confusion[lab].values())
        per_class[lab] = {
            "precision": tp / predicted if predicted else None,
            "recall": tp / actual if actual else None,
            "support": actual,
            "predicted": predicted,
        }
    lat: dict[str, list[float]] = {"human": [], "machine": []}
    for r in results:
        v = getattr(r, side)
        if v.label == r.call.label and v.label in lat:
            x = latency_ms(v, r.speech_onset_ms, r.first_utterance_end_ms)
            if x is not None:
                lat[v.label].append(x)
    business = [
        getattr(r, side).label == "human"
        for r in results
        if r.call.label == "human" and r.call.subtype and "business" in r.call.subtype
    ]
    by_subtype: dict[str, list[bool]] = {}
    for r in results:
        by_subtype.setdefault(r.call.subtype or "-", []).append(getattr(r, side).label == r.call.label)
    return {
        "calls": n,
        "accuracy": sum(t == v.label for t, v in pairs) / n if n else None,
        "per_class": per_class,
        "confusion": confusion,
        "latency_ms": {
            "human_after_utterance_end": {
                "n": len(lat["human"]),
                "p50": _pct(lat["human"], 50),
                "p90": _pct(lat["human"], 90),
            },
            "machine_after_speech_onset": {
                "n": len(lat["machine"]),
                "p50": _pct(lat["machine"], 50),
                "p90": _pct(lat["machine"], 90),
            },
        },
        "decision_time_ms": {
            "p50": _pct([v.t_ms for _, v in pairs], 50),
            "p90": _pct([v.t_ms for _, v in pairs], 90),
        },
        "business_pickups_human": {
            "n": len(business),
            "rate": sum(business) / len(business) if business else None,
        },
        "accuracy_by_subtype": {
            k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_subtype.items())
        },
        "detectors": dict(Counter(getattr(r, side).detector.split("-")[0] for r in results)),
    }


def report(results: Sequence[CallResult], *, workflow: str) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "callgate": metrics(results, "ours"),
        "asterisk": metrics(results, "baseline"),
    }


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f} %" if pct else f"{x:.0f}"


def format_report(rep: dict[str, Any]) -> str:
    """Aligned text: both systems side by side, then both confusion matrices."""
    ours, ast = rep["callgate"], rep["asterisk"]
    rows: list[tuple[str, str, str]] = [
        ("calls", str(ours["calls"]), str(ast["calls"])),
        ("accuracy", _f(ours["accuracy"], True), _f(ast["accuracy"], True)),
    ]
    for lab in VERDICT_LABELS:
        o, a = ours["per_class"].get(lab), ast["per_class"].get(lab)
        if o is None and a is None:
            continue
        for key in ("precision", "recall"):
            rows.append((f"{lab} {key}", _f(o and o[key], True), _f(a and a[key], True)))
    for key, title in (
        ("human_after_utterance_end", "human latency after utterance end"),
        ("machine_after_speech_onset", "machine latency after speech onset"),
    ):
        o, a = ours["latency_ms"][key], ast["latency_ms"][key]
        rows.append((f"{title} p50 (ms)", _f(o["p50"]), _f(a["p50"])))
        rows.append((f"{title} p90 (ms)", _f(o["p90"]), _f(a["p90"])))
    rows.append(
        (
            "decision time p50 (ms from call start)",
            _f(ours["decision_time_ms"]["p50"]),
            _f(ast["decision_time_ms"]["p50"]),
        )
    )
    ob, ab = ours["business_pickups_human"], ast["business_pickups_human"]
    if ob["n"]:
        rows.append((f"business pickups -> human (n={ob['n']})", _f(ob["rate"], True), _f(ab["rate"], True)))
    w = max(len(r[0]) for r in rows) + 2
    out = [
        f"AMD evaluation, workflow preset '{rep['workflow']}'",
        "",
        f"{'':<{w}}{'callgate':>12}{'asterisk':>12}",
        "-" * (w + 24),
    ]
    out += [f"{a:<{w}}{b:>12}{c:>12}" for a, b, c in rows]
    for name, m in (("callgate", ours), ("asterisk app_amd", ast)):
        labs = list(m["confusion"])
        cw = max(8, *(len(x) for x in labs)) + 1
        out += [
            "",
            f"confusion ({name}): rows = truth, columns = verdict",
            f"{'':<{cw}}" + "".join(f"{x[: cw - 1]:>{cw}}" for x in labs),
        ]
        out += [f"{t[: cw - 1]:<{cw}}" + "".join(f"{m['confusion'][t][p]:>{cw}}" for p in labs) for t in labs]
    subs = ours["accuracy_by_subtype"]
    if len(subs) > 1:
        sw = max(len(s) for s in subs) + 2
        out += ["", "accuracy by subtype", f"{'':<{sw}}{'n':>6}{'callgate':>10}{'asterisk':>10}"]
        out += [
            f"{s:<{sw}}{v['n']:>6}{_f(v['accuracy'], True):>10}"
            f"{_f(ast['accuracy_by_subtype'][s]['accuracy'], True):>10}"
            for s, v in subs.items()
        ]
    return "\n".join(out)


def evaluate_dir(
    directory: str | Path,
    *,
    workflow: str = "default",
    presets_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    meta_path: str | Path | None = None,
    split: str | None = None,
    traces_dir: str | Path | None = None,
    model: Any | None = None,
    model_path: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Read labels, load the model and preset, evaluate both systems; returns `report()`."""
    from processors.amd_decision import load_presets

    presets = load_presets(presets_path)
    if workflow not in presets:
        raise KeyError(f"no AMD preset for workflow {workflow!r} (have: {', '.join(presets)})")
    calls = read_labels(directory, labels_path, meta_path, split)
    if limit is not None:
        calls = calls[:limit]
    if not calls:
        raise ValueError(f"{directory}: no labelled calls" + (f" in split {split!r}" if split else ""))
    missing = [c.file for c in calls if not c.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled files are missing, e.g. {missing[0]}")
    if model is None:
        from amd_model.runtime import AmdModel

        model = AmdModel(Path(model_path) if model_path else None)  # fail early, even with jobs > 1
    results = evaluate_calls(
        calls,
        model,
        presets[workflow],
        workflow=workflow,
        traces_dir=traces_dir,
        progress=progress,
        jobs=jobs,
        model_path=model_path,
    )
    return report(results, workflow=workflow)


# --- real recordings --------------------------------------------------------------------------------


def read_real_greetings(directory: str | Path, *, all_seen: bool = False) -> list[LabelledCall]:
    """The real greetings in `directory` (index.csv `file,kind,...` when present, else every WAV), all
    answered by a machine. `split` says whether model training saw the file: the corpus builder mixes a
    fixed half (every other file in sorted order) into training calls and holds the other half out;
    `all_seen` when the model's heads were refitted on every greeting (1.4.0), so none is held out."""
    from amd_model.tools.corpus import dev_greetings_split

    directory = Path(directory)
    kinds: dict[str, str] = {}
    index = directory / "index.csv"
    if index.is_file():
        with open(index, newline="") as f:
            kinds = {row["file"]: row.get("kind") or "" for row in csv.DictReader(f) if row.get("file")}
    files = sorted(directory.glob("*.wav"))
    seen, _held = dev_greetings_split(files)
    seen_names = {p.name for p in seen}
    return [
        LabelledCall(
            file=p.name,
            path=p,
            label="machine",
            subtype=kinds.get(p.name) or "greeting",
            split="seen_in_training" if all_seen or p.name in seen_names else "held_out",
        )
        for p in files
    ]


def _model_meta(model: Any) -> dict[str, Any]:
    """A model's amd.json ({} for a stand-in without one)."""
    return getattr(model, "meta", None) or {}


def refit_exposure(model: Any) -> dict[str, Any]:
    """What real audio a model's heads were refitted on (amd.json `head_refit`, written by
    `amd_model.tools.head_refit --export`): {"real_greetings": n, "real_human_pickups": n}, or {}."""
    return dict(_model_meta(model).get("head_refit") or {})


IN_SAMPLE = ("in-sample: model {version}'s heads were refitted on {what}, so this row measures fit, not "
             "generalization; the cross-validated figures are in amd_model/MODEL_CARD.md")


def real_greetings_metrics(results: Sequence[CallResult], side: str) -> dict[str, Any]:
    """Machine-verdict rate and the machine verdict's latency after greeting onset (the VAD's first
    speech), per training split; an `ivr` verdict on a recorded greeting is counted apart."""

    def one(rs: Sequence[CallResult]) -> dict[str, Any]:
        verdicts = [getattr(r, side) for r in rs]
        lat = [
            v.t_ms - r.speech_onset_ms
            for r, v in zip(rs, verdicts, strict=True)
            if v.label == "machine" and r.speech_onset_ms is not None
        ]
        return {
            "n": len(rs),
            "machine": sum(v.label == "machine" for v in verdicts) / len(rs) if rs else None,
            "verdicts": dict(Counter(v.label for v in verdicts)),
            "latency_after_onset_ms": {"n": len(lat), "p50": _pct(lat, 50), "p90": _pct(lat, 90)},
        }

    groups = {"all": list(results)}
    for split in ("held_out", "seen_in_training"):
        groups[split] = [r for r in results if r.call.split == split]
    return {name: one(rs) for name, rs in groups.items()}


def evaluate_real_greetings(
    directory: str | Path,
    detectors: Sequence[DetectorConfig],
    *,
    workflow: str = "default",
    model: Any | None = None,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """The shipped model (with `workflow`'s preset) and the Asterisk baseline on every real greeting."""
    if model is None:
        from amd_model.runtime import AmdModel

        model = AmdModel(Path(model_path) if model_path else None)
    refit = refit_exposure(model)
    calls = read_real_greetings(directory, all_seen=bool(refit.get("real_greetings")))
    if not calls:
        raise ValueError(f"{directory}: no WAV files")
    vad = OfflineSpeechDetector()
    results = [evaluate_call(c, model, vad, detectors, workflow=workflow)[0] for c in calls]
    return {
        "directory": str(directory),
        "workflow": workflow,
        "model_version": _model_meta(model).get("version"),
        "in_sample": bool(refit.get("real_greetings")),
        "callgate": real_greetings_metrics(results, "ours"),
        "asterisk": real_greetings_metrics(results, "baseline"),
    }


def format_real_report(rep: dict[str, Any]) -> str:
    """The real-greetings table: machine rate and median latency after onset, both systems, per split."""
    out = [
        f"Real recordings: {rep['directory']} (all answered by a machine), preset '{rep['workflow']}'",
        "machine = share called machine; latency = machine verdict - greeting onset (VAD), ms",
        f"{'':<34}{'callgate':>12}{'p50 ms':>9}{'asterisk':>12}{'p50 ms':>9}",
    ]
    titles = {
        "all": "all",
        "held_out": "held out from training",
        "seen_in_training": "seen in training",
    }
    for key, title in titles.items():
        o, a = rep["callgate"][key], rep["asterisk"][key]
        if not o["n"]:
            continue
        row = f"{title} (n={o['n']})"
        out.append(
            f"{row:<34}{_f(o['machine'], True):>12}"
            f"{_f(o['latency_after_onset_ms']['p50']):>9}{_f(a['machine'], True):>12}"
            f"{_f(a['latency_after_onset_ms']['p50']):>9}"
        )
    o, a = rep["callgate"]["all"]["verdicts"], rep["asterisk"]["all"]["verdicts"]
    out.append(f"verdicts: callgate {dict(sorted(o.items()))}; asterisk {dict(sorted(a.items()))}")
    if rep.get("in_sample"):
        out.append(IN_SAMPLE.format(version=rep.get("model_version"), what="every one of these greetings"))
    return "\n".join(out)


def evaluate_real_humans(
    detectors: Sequence[DetectorConfig],
    *,
    workflow: str = "default",
    model: Any | None = None,
    model_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Both systems on real people answering (`amd_model.tools.real_humans`, built from the Debian
    packages' recordings into a temporary folder); None when those packages are not installed."""
    import contextlib
    import io
    import tempfile

    from tqdm import tqdm

    from amd_model.tools import real_humans

    if real_humans.ensure_packages(install=False):
        return None
    if model is None:
        from amd_model.runtime import AmdModel

        model = AmdModel(Path(model_path) if model_path else None)
    with tempfile.TemporaryDirectory(prefix="callgate-real-humans-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            metas = real_humans.build(Path(tmp), seed=seed)
        vad = OfflineSpeechDetector()
        calls = read_labels(tmp)
        bar = tqdm(calls, desc="real people", unit="call", disable=not progress)
        results = [evaluate_call(c, model, vad, detectors, workflow=workflow)[0] for c in bar]
    speaker_of = {m["file"]: m["speaker"] for m in metas}
    by_set: dict[str, list[int]] = {}  # recording set -> [pickups, called human]
    for r in results:
        counts = by_set.setdefault(speaker_of[r.call.file], [0, 0])
        counts[0] += 1
        counts[1] += r.ours.label == "human"
    return {
        "workflow": workflow,
        "model_version": _model_meta(model).get("version"),
        "in_sample": bool(refit_exposure(model).get("real_human_pickups")),
        "sources": sorted(real_humans.PACKAGES),
        "n": len(results),
        "recording_sets": len(by_set),
        "callgate_human_by_set": {k: {"n": v[0], "human": v[1]} for k, v in sorted(by_set.items())},
        "callgate": metrics(results, "ours"),
        "asterisk": metrics(results, "baseline"),
    }


def format_humans_report(rep: dict[str, Any]) -> str:
    """Real people answering: the share called human per utterance length, and the human verdict's delay."""
    sub = {k: (rep["callgate"]["accuracy_by_subtype"].get(k), rep["asterisk"]["accuracy_by_subtype"].get(k))
           for k in ("real_short", "real_long")}
    titles = {"real_short": "says <= 2.5 s, then waits", "real_long": "talks on for 2.5-7 s"}
    out = [
        f"Real human voices: {rep['n']} pickups built from the recordings of Debian "
        f"{', '.join(rep['sources'])} ({rep['recording_sets']} recording sets; all answered by a person), "
        f"preset '{rep['workflow']}'",
        f"{'':<34}{'callgate human':>16}{'asterisk human':>16}",
    ]
    for key, (o, a) in sub.items():
        if o:
            out.append(f"{titles[key] + ' (n=' + str(o['n']) + ')':<34}{_f(o['accuracy'], True):>16}"
                       f"{_f(a['accuracy'] if a else None, True):>16}")
    lo = rep["callgate"]["latency_ms"]["human_after_utterance_end"]
    la = rep["asterisk"]["latency_ms"]["human_after_utterance_end"]
    out.append(f"human verdict after the first utterance ends, p50: callgate {_f(lo['p50'])} ms, "
               f"asterisk {_f(la['p50'])} ms")
    sets = rep.get("callgate_human_by_set", {})
    worst = sorted(((v["human"] / v["n"], k, v) for k, v in sets.items() if v["human"] < v["n"]))[:6]
    if worst:
        out.append("recording sets callgate takes for a machine most often: "
                   + ", ".join(f"{k} {v['human']}/{v['n']} human" for _, k, v in worst)
                   + f" ({sum(v['human'] == v['n'] for v in sets.values())} of {len(sets)} sets all human)")
    if rep.get("in_sample"):
        out.append(IN_SAMPLE.format(version=rep.get("model_version"), what="these pickups (same seed)"))
    return "\n".join(out)
