"""Score what a system did against the labels: end-of-turn delay, premature ends, background starts, lost speech.

Definitions (all in ms of audio; a turn runs from its labelled start to its true end, its window to
the next turn's start):
* end-of-turn delay: first final end at or after the true end, minus the true end. A turn that no
  final end closes before the next turn starts counts with the whole gap (a lower bound) and as missed.
* premature end: a final end inside the turn (the caller went on). Rate per turn, reported for the
  turns with inner pauses and for all turns.
* reply-start delay (greedy): when the LLM starts for the turn that really ended: the tentative end
  that the final end confirmed (no cancel in between), else the final end.
* background segment started a turn: a background-speech span (TV, second speaker) at least 500 ms
  before any caller turn and 1.5 s after it during which (or up to 400 ms after) the system emitted a
  turn start or, for callgate, the gate opened for caller speech (which is what a barge-in acts on).
* caller speech lost: labelled caller speech (spoken segments) outside every user turn the system
  opened (its claimed start to its final end), as a share of all caller speech: words no turn holds.
* turn-start delay: emission time of the first turn start in [start - 300, end] minus the labelled
  start.
* gate delay (callgate): emission of the gate's first caller-speech start in [start - 300, end] (with a
  two-stage gate: of the tentative opening that the first confirmation followed, when the bot pauses;
  the confirmation's own delay is reported beside it) minus
  when plain VAD would have reported the caller: its first start during the turn's first spoken
  segment (or up to 300 ms before it), but never before start + 128 ms (its 96 ms confirmation, one
  window late at most; a VAD start in the 300 ms before the caller speaks is background, and a VAD
  already active on background when the turn begins has no start to compare: start + 128 ms). Where the
  VAD missed the first segment (and was not on), its first start later in the turn: the gate, after the
  VAD, cannot hear sooner, and what the VAD missed is lost speech.
  A gate already open at that moment adds nothing (0), nor does a tentative opening still pending
  then that goes on to be confirmed (the bot paused on the background just before the caller began);
  one revoked during the turn does not count (the bot resumed over the caller). A turn during which the
  gate never confirmed an opening (and was not already open) is a gate-missed turn.
* background pauses (two-stage gate): background segments in which the gate opened tentatively (the bot
  paused) and revoked it, with no confirmed opening: a short silence in the bot's speech, no barge-in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from turn_eval.runner import SystemRun

BG_SPEECH = ("tv", "second_speaker")
VAD_CONFIRM_MS = 128.0  # the VAD reports speech this long after it begins at the latest (96 ms + a window)


@dataclass
class Tally:
    """Per-system raw counts, summed over files."""

    delays: list[float] = field(default_factory=list)
    reply_delays: list[float] = field(default_factory=list)
    missed_ends: int = 0
    turns: int = 0
    paused_turns: int = 0
    premature: int = 0
    premature_paused: int = 0
    tentative: int = 0
    cancels: int = 0
    bg_segments: int = 0
    bg_started: int = 0
    bg_by_level: dict[str, list[int]] = field(default_factory=dict)
    caller_ms: float = 0.0
    lost_ms: float = 0.0
    start_delays: list[float] = field(default_factory=list)
    gate_delays: list[float] = field(default_factory=list)
    gate_missed: int = 0
    bg_paused: int = 0  # two-stage gate: background segments that only paused the bot (revoked openings)
    confirm_delays: list[float] = field(default_factory=list)  # two-stage: gate delay of the confirmation
    missed_starts: int = 0
    false_starts: int = 0
    quiet_minutes: float = 0.0


def _level_bucket(rel_db: float) -> str:
    if rel_db > -10:
        return "-6..-10 dB"
    if rel_db > -15:
        return "-10..-15 dB"
    return "-15..-20 dB"


def _covered(a: float, b: float, intervals: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, y) - max(a, x)) for x, y in intervals)


def _still_on(begins: list[float], stops: list[float], t: float) -> bool:
    """Did the last of `begins` at or before t come with none of `stops` between it and t?"""
    before = [b for b in begins if b <= t]
    return bool(before) and not any(before[-1] <= x <= t for x in stops)


def _open_at(run: SystemRun, t: float) -> bool:
    """Was the gate open for (what it took for) caller speech at t?"""
    return _still_on([em for em, _c in run.gate_starts], run.gate_ends, t)


def score_call(labels: dict[str, Any], run: SystemRun, tally: Tally) -> None:
    turns = sorted(labels["turns"], key=lambda t: t["start_ms"])
    dur = float(labels["duration_ms"])
    ends = sorted(run.ends)
    for k, turn in enumerate(turns):
        s, e = float(turn["start_ms"]), float(turn["end_ms"])
        nxt = float(turns[k + 1]["start_ms"]) if k + 1 < len(turns) else dur
        paused = bool(turn["pauses"])
        tally.turns += 1
        tally.paused_turns += paused
        inside = [t for t in ends if s <= t < e]
        if inside:
            tally.premature += 1
            tally.premature_paused += paused
        after = [t for t in ends if e <= t < nxt]
        if after:
            final = after[0]
            tally.delays.append(final - e)
            tent = [t for t in run.tentative if e - 1e-6 <= t <= final]
            cancelled = [c for c in run.cancels if tent and tent[0] <= c <= final]
            tally.reply_delays.append((tent[0] if tent and not cancelled else final) - e)
        else:
            tally.missed_ends += 1
            tally.delays.append(nxt - e)
            tally.reply_delays.append(nxt - e)
        tally.tentative += sum(1 for t in run.tentative if s <= t < nxt)
        tally.cancels += sum(1 for t in run.cancels if s <= t < nxt)
        started = [em for em, _c in run.starts if s - 300 <= em <= e]
        if started:
            tally.start_delays.append(started[0] - s)
        else:
            tally.missed_starts += 1
        if run.vad_starts:  # callgate: what the gate adds to the moment the caller is heard
            delay, _ref = gate_delay(turn, run)
            if delay is None:
                tally.gate_missed += 1
            else:
                tally.gate_delays.append(delay)
            if run.gate_tentatives:
                confirmed, _ref = gate_delay(turn, run, tentative=False)
                if confirmed is not None:
                    tally.confirm_delays.append(confirmed)
        for seg in turn["segments"]:
            a, b = float(seg["start_ms"]), float(seg["end_ms"])
            tally.caller_ms += b - a
            tally.lost_ms += (b - a) - min(b - a, _covered(a, b, run.speech))
    hits = background_hits(labels, run)
    tally.bg_paused += background_pauses(hits, run)
    for bg, hit in hits:
        tally.bg_segments += 1
        tally.bg_started += hit
        bucket = tally.bg_by_level.setdefault(_level_bucket(float(bg["rel_db"])), [0, 0])
        bucket[0] += 1
        bucket[1] += hit
    if labels.get("condition", "none") != "none":
        near = [(float(t["start_ms"]) - 300, float(t["end_ms"]) + 300) for t in turns]
        tally.false_starts += sum(1 for em, _c in run.starts if not any(x <= em <= y for x, y in near))
        quiet = dur - sum(y - x for x, y in near)
        tally.quiet_minutes += max(0.0, quiet) / 60000


def vad_on_at(run: SystemRun, t: float) -> bool:
    """Was plain VAD already on (a segment begun and not ended) at t?"""
    return _still_on(run.vad_starts, run.vad_ends, t)


def plain_vad_hears(turn: dict[str, Any], run: SystemRun) -> float:
    """When plain VAD would have reported this caller turn: its first start in the turn's first spoken
    segment (or up to 300 ms before it), never before start + 128 ms; a VAD already on (background) when
    the turn begins has it at once (start + 128 ms). Where the VAD missed the first segment and first
    reported the caller later in the turn, that later start: the gate sits after the VAD, so a start the
    VAD itself heard late is the VAD's delay, not the gate's (its words show as lost speech)."""
    s, e = float(turn["start_ms"]), float(turn["end_ms"])
    seg0_end = float(turn["segments"][0]["end_ms"]) if turn["segments"] else e
    vad = [v for v in run.vad_starts if s - 300 <= v <= seg0_end]
    if not vad and not vad_on_at(run, s):
        vad = [v for v in run.vad_starts if seg0_end < v <= e]
    return max(vad[0], s + VAD_CONFIRM_MS) if vad else s + VAD_CONFIRM_MS


def gate_delay(turn: dict[str, Any], run: SystemRun, tentative: bool = True) -> tuple[float | None, float]:
    """What the gate added to the moment this caller turn is heard (None: it never opened), and that
    moment: when plain VAD would have reported the caller (see the module docstring). A two-stage gate
    is heard at its tentative opening (the bot pauses); `tentative=False`: at its confirmation."""
    s, e = float(turn["start_ms"]), float(turn["end_ms"])
    ref = plain_vad_hears(turn, run)
    if _open_at(run, ref):
        return 0.0, ref  # already open (on background just before): the turn is heard as it starts
    confirmed = sorted(em for em, _c in run.gate_starts if s - 300 <= em <= e)
    if not confirmed:
        return None, ref  # a tentative opening that was revoked never made the turn heard
    # A tentative opening is when the system reacts (the bot pauses, the turn's audio is held from its
    # claimed start): the one that led to the first confirmation, i.e. the last one before it. One that
    # was pending when the caller began but was revoked does not count (the bot resumed over the caller).
    lead = [em for em, _c in run.gate_tentatives if em <= confirmed[0]] if tentative else []
    return max(0.0, (lead[-1] if lead else confirmed[0]) - ref), ref


def background_hits(labels: dict[str, Any], run: SystemRun) -> list[tuple[dict[str, Any], bool]]:
    """Each scored background segment (speech kinds, clear of the caller's turns) and whether a turn
    start or a gate opening fired in it."""
    busy = [(float(t["start_ms"]) - 500, float(t["end_ms"]) + 1500) for t in labels["turns"]]
    out = []
    for bg in labels.get("background", []):
        if bg["kind"] not in BG_SPEECH:
            continue
        a, b = float(bg["start_ms"]), float(bg["end_ms"])
        if any(min(b, y) > max(a, x) for x, y in busy):
            continue
        out.append((bg, any(a <= em <= b + 400 for em, _c in run.starts + run.gate_starts)))
    return out


def background_pauses(hits: list[tuple[dict[str, Any], bool]], run: SystemRun) -> int:
    """Of the scored background segments (`background_hits`), those that only paused the bot: a
    tentative opening in them (two-stage gate) that was revoked, with no turn start or confirmed opening."""
    return sum(
        1 for bg, hit in hits
        if not hit and any(float(bg["start_ms"]) <= em <= float(bg["end_ms"]) + 400 for em, _c in run.gate_tentatives)
    )


def format_two_stage(s: Summary) -> str | None:
    """The two-stage gate's own figures (None for a one-stage gate or a baseline)."""
    if s.confirm_delayed_starts is None:
        return None
    return (f"two stages: {s.bg_paused}/{s.bg_segments} background segments only paused the bot (tentative, "
            f"revoked); confirmations > 100 ms after plain VAD: {s.confirm_delayed_starts} "
            f"(p90 {s.confirm_delay_p90_ms:.0f} ms)")

@dataclass
class Summary:
    system: str
    turns: int
    paused_turns: int
    delay_p50_ms: float
    delay_p90_ms: float
    reply_delay_p50_ms: float
    premature_paused: float
    premature_all: float
    missed_ends: int
    tentative_per_turn: float
    cancels_per_turn: float
    bg_segments: int
    bg_started: float
    bg_by_level: dict[str, str]
    false_starts_per_min: float
    caller_lost_pct: float
    lost_ms: float
    start_delay_p50_ms: float
    start_delay_max_ms: float
    missed_starts: int
    gate_delay_max_ms: float | None
    gate_delayed_starts: int  # turn starts the gate delayed by more than 100 ms
    gate_missed_turns: int  # turns during which the gate never opened
    bg_paused: int = 0  # two-stage gate: background segments that paused the bot and were revoked
    confirm_delayed_starts: int | None = None  # two-stage gate: confirmations > 100 ms after plain VAD
    confirm_delay_p90_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(system: str, t: Tally) -> Summary:
    d = np.asarray(t.delays) if t.delays else np.zeros(1)
    return Summary(
        system=system,
        turns=t.turns,
        paused_turns=t.paused_turns,
        delay_p50_ms=float(np.median(d)),
        delay_p90_ms=float(np.quantile(d, 0.9)),
        reply_delay_p50_ms=float(np.median(t.reply_delays)) if t.reply_delays else 0.0,
        premature_paused=t.premature_paused / max(t.paused_turns, 1),
        premature_all=t.premature / max(t.turns, 1),
        missed_ends=t.missed_ends,
        tentative_per_turn=t.tentative / max(t.turns, 1),
        cancels_per_turn=t.cancels / max(t.turns, 1),
        bg_segments=t.bg_segments,
        bg_started=t.bg_started / max(t.bg_segments, 1),
        bg_by_level={k: f"{v[1]}/{v[0]}" for k, v in sorted(t.bg_by_level.items())},
        false_starts_per_min=t.false_starts / max(t.quiet_minutes, 1e-9),
        caller_lost_pct=100 * t.lost_ms / max(t.caller_ms, 1e-9),
        lost_ms=t.lost_ms,
        start_delay_p50_ms=float(np.median(t.start_delays)) if t.start_delays else 0.0,
        start_delay_max_ms=float(np.max(t.start_delays)) if t.start_delays else 0.0,
        missed_starts=t.missed_starts,
        gate_delay_max_ms=float(np.max(t.gate_delays)) if t.gate_delays else None,
        gate_delayed_starts=int(sum(d > 100 for d in t.gate_delays)),
        gate_missed_turns=t.gate_missed,
        bg_paused=t.bg_paused,
        confirm_delayed_starts=int(sum(d > 100 for d in t.confirm_delays)) if t.confirm_delays else None,
        confirm_delay_p90_ms=float(np.quantile(t.confirm_delays, 0.9)) if t.confirm_delays else None,
    )


def format_table(rows: list[Summary]) -> str:
    head = (f"{'system':16s} {'delay p50':>9s} {'p90':>6s} {'reply p50':>9s} {'premature':>9s} {'(all)':>6s} "
            f"{'missed':>6s} {'bg start':>8s} {'false/min':>9s} {'lost %':>6s} {'start p50':>9s} {'max':>5s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.system:16s} {r.delay_p50_ms:9.0f} {r.delay_p90_ms:6.0f} {r.reply_delay_p50_ms:9.0f} "
            f"{100 * r.premature_paused:8.1f}% {100 * r.premature_all:5.1f}% {r.missed_ends:6d} "
            f"{100 * r.bg_started:7.1f}% {r.false_starts_per_min:9.2f} {r.caller_lost_pct:6.2f} "
            f"{r.start_delay_p50_ms:9.0f} {r.start_delay_max_ms:5.0f}"
        )
    return "\n".join(lines)
