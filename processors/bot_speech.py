"""The bot's voice on the line: paced audio, a mark after every word and clause, and what was heard.

Each clause from the TTS is cut at its word boundaries (the TTS's word timestamps when it gives them,
else the clause's voiced span shared out by characters) and queued as word audio + a mark named after
the word (`a:w<turn>.<clause>.<word>:<text>`), then a clause mark (`a:c<turn>.<clause>`). A turn
starts with a mark too (`a:s<turn>`), whose echo says when Twilio started playing it.

Audio is released 20 ms at a time on the *inbound* audio clock, `lead_ms` ahead of the modelled
playout, so Twilio's buffer never holds more than that: pausing (stop releasing) silences the bot
within `lead_ms` + 20 ms without a `clear`.

What the caller heard comes from echoes, not the server clock. Before a `clear`, an echo means played.
After one, Twilio echoes every pending mark at once; an echo is counted played only if it arrived no
earlier than its audio could have finished: (echo position - modelled due time) must reach the round
trip (the floor of recent played echoes' lags, in audio time) within `tolerance_ms`. Marks still
queued here at the `clear` were never sent and are not played. A barge-in is preceded by a pause:
when the `clear` leaves more than the lead (+ a margin) after it, Twilio has played everything it
had by the time the `clear` gets there, so every mark sent before the pause counts as played
whatever the jitter of its echo.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callgate.audio import FRAME_SAMPLES, SAMPLE_RATE
from processors.agent_frames import (
    BotClauseFrame,
    BotHoldFrame,
    BotPauseFrame,
    BotPlaybackFrame,
    BotReplyEndFrame,
    BotResumeFrame,
    ReplyCancelFrame,
)
from processors.frames import MarkResolvedFrame, TwilioMarkFrame

SAMPLES_PER_MS = SAMPLE_RATE // 1000
MARK_PREFIX = "a:"
RELEASE_BYTES = FRAME_SAMPLES * 2  # 20 ms of PCM16
DRAIN_MARGIN_MS = 100.0  # beyond the lead: jitter of the round trip and of Twilio's playout


@dataclass
class Mark:
    name: str
    turn: int
    kind: str  # s (turn start) | w (word) | c (clause end)
    word: str = ""
    offset_ms: float = 0.0  # bot audio of the turn queued before it
    word_start_ms: float = 0.0  # for words: offset of the word's first sample in the turn
    due_ms: float | None = None  # modelled playout end (inbound clock) when released
    clear_gen: int = 0
    echo_ms: float | None = None
    played: bool | None = None
    audio: bytes = b""  # the audio queued just before it (kept for a resume)
    drained: bool = False  # released before a pause that outlasted Twilio's buffer: it has played


@dataclass
class Clause:
    turn: int
    index: int
    text: str
    pcm: bytearray = field(default_factory=bytearray)
    word_pts: list[int] = field(default_factory=list)
    first_byte_wall: float | None = None
    arrival_ms: float = 0.0  # inbound clock at the TTS's first byte (Pipecat's server-clock anchor)
    voiced_start_ms: float | None = None  # first voiced 20 ms frame (where the first timestamp points)
    started: bool = False
    words_done: int = 0
    committed_ms: float = 0.0  # audio of the clause already queued
    pipecat_base: float = 0.0
    word_audio: bytearray = field(default_factory=bytearray)  # the current word's audio queued so far
    pipecat_word_start: float | None = None


@dataclass
class TurnPlayout:
    """One bot turn as the caller got it."""

    turn: int
    text: str = ""  # everything sent to the TTS
    marks: list[Mark] = field(default_factory=list)
    queued_ms: float = 0.0
    reply_done: bool = False
    first_byte_wall: float | None = None
    first_release_wall: float | None = None
    first_release_ms: float | None = None
    start_echo_ms: float | None = None
    interrupted_at_ms: float | None = None
    dropped_ms: float = 0.0
    resumed: int = 0
    server_clock_words: list[str] | None = None  # Pipecat's default estimate at the clear
    pipecat_starts: list[tuple[float, str]] = field(default_factory=list)  # (server-clock word start, word)

    def words(self) -> list[Mark]:
        return [m for m in self.marks if m.kind == "w"]

    @property
    def resolved(self) -> bool:
        return all(m.played is not None for m in self.marks)

    def heard_words(self) -> list[str]:
        out = []
        for m in self.words():
            if not m.played:
                break
            out.append(m.word)
        return out

    @property
    def heard_text(self) -> str:
        return " ".join(self.heard_words())

    @property
    def complete(self) -> bool:
        return self.reply_done and self.resolved and all(m.played for m in self.marks)


def word_spans(pcm: np.ndarray, words: list[str], pts_ns: list[int] | None = None) -> list[float]:
    """End offset (ms) of each word in a clause's audio, on 20 ms frame boundaries.

    With one TTS timestamp per word, word k ends where word k+1 starts; otherwise the voiced span
    (frames above -40 dB of the peak) is shared out by characters.
    """
    n = len(pcm)
    total_ms = n / SAMPLES_PER_MS
    if not words:
        return []
    frame = FRAME_SAMPLES
    if pts_ns and len(pts_ns) == len(words):
        energy = _frame_energy(pcm, frame)
        start_ms = _voiced_bounds(energy, frame)[0]
        starts = [start_ms + (p - pts_ns[0]) / 1e6 for p in pts_ns]
        ends = [*starts[1:], total_ms]
    else:
        energy = _frame_energy(pcm, frame)
        v0, v1 = _voiced_bounds(energy, frame)
        weights = np.array([len(w) + 1 for w in words], dtype=float)
        cum = np.cumsum(weights) / weights.sum()
        ends = [v0 + c * (v1 - v0) for c in cum]
        ends[-1] = total_ms
    step = frame / SAMPLES_PER_MS
    out, prev = [], 0.0
    for e in ends:
        e = min(total_ms, max(prev + step, round(e / step) * step))
        out.append(e)
        prev = e
    out[-1] = total_ms
    return out


def _first_voiced_ms(pcm: bytearray, min_dbfs: float = -45.0) -> float | None:
    """Start of the first 20 ms frame above `min_dbfs` (None while there is none yet)."""
    x = np.frombuffer(bytes(pcm[: len(pcm) // 2 * 2]), dtype=np.int16)
    e = _frame_energy(x, FRAME_SAMPLES)
    on = np.nonzero(e >= (32768 * 10 ** (min_dbfs / 20)) ** 2)[0]
    return float(on[0] * FRAME_SAMPLES / SAMPLES_PER_MS) if len(x) >= FRAME_SAMPLES and len(on) else None


def _frame_energy(pcm: np.ndarray, frame: int) -> np.ndarray:
    m = len(pcm) // frame
    if m == 0:
        return np.zeros(1)
    x = pcm[: m * frame].astype(np.float32).reshape(m, frame)
    return np.mean(x * x, axis=1)


def _voiced_bounds(energy: np.ndarray, frame: int) -> tuple[float, float]:
    step = frame / SAMPLES_PER_MS
    if energy.max() <= 0:
        return 0.0, len(energy) * step
    on = np.nonzero(energy >= energy.max() * 1e-4)[0]
    return float(on[0] * step), float((on[-1] + 1) * step)


def mark_word(word: str) -> str:
    return re.sub(r"[^\w'-]", "", word)[:24]


@dataclass
class PlayoutLedger:
    """Queue, pacing, marks and echoes of the bot's audio, free of frames and asyncio (audio-time ms)."""

    lead_ms: float = 60.0
    tolerance_ms: float = 20.0  # echo positions jitter by an inbound frame (20 ms)
    queue: deque[tuple[str, Any]] = field(default_factory=deque)  # ("audio", bytes) | ("mark", Mark)
    play_end_ms: float = 0.0
    paused: bool = False
    paused_at_ms: float | None = None
    clear_gen: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=8))  # of the last played word/clause echoes
    start_rtt_ms: float | None = None  # the same for turn-start marks (echoed on arrival, not after audio)
    turns: dict[int, TurnPlayout] = field(default_factory=dict)
    marks: dict[str, Mark] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)  # greedy turns whose audio waits for the turn end
    _pipecat_end_ms: float = 0.0

    def turn(self, turn: int) -> TurnPlayout:
        if turn not in self.turns:
            self.turns[turn] = TurnPlayout(turn)
        return self.turns[turn]

    def _mark(self, mark: Mark) -> None:
        self.marks[mark.name] = mark
        self.turn(mark.turn).marks.append(mark)
        self.queue.append(("mark", mark))

    def add_clause(self, clause: Clause) -> None:
        """Queue a whole synthesized clause: word audio and word marks, then the clause mark."""
        self.feed_clause(clause, final=True)

    def feed_clause(self, c: Clause, *, final: bool) -> None:
        """Queue what can be queued of a clause still arriving: every word whose end is known (the next
        word's TTS timestamp has come and its audio is here). `final`: the clause is complete; queue the
        rest (words without timestamps share the remaining voiced audio by characters) and its mark."""
        t = self.turn(c.turn)
        if not c.started:
            c.started = True
            if not t.marks:
                self._mark(Mark(f"{MARK_PREFIX}s{c.turn}", c.turn, "s"))
                t.first_byte_wall = c.first_byte_wall
            t.text = f"{t.text} {c.text}".strip()
            # Pipecat's own bookkeeping (for comparison): word timestamps start when the TTS audio
            # arrives (not when it plays) and a word counts as spoken once it starts.
            c.pipecat_base = max(self._pipecat_end_ms, c.arrival_ms)
        words = [w for w in c.text.split() if mark_word(w)]
        pcm = np.frombuffer(bytes(c.pcm[: len(c.pcm) // 2 * 2]), dtype=np.int16)
        have_ms = len(pcm) / SAMPLES_PER_MS
        step = FRAME_SAMPLES / SAMPLES_PER_MS
        pts = c.word_pts[: len(words)]
        if final:
            ends = self._final_ends(c, pcm, words, pts)
        elif len(pts) >= 2 and c.voiced_start_ms is not None:
            ends = [c.voiced_start_ms + (p - pts[0]) / 1e6 for p in pts[1:]]  # word k ends where k+1 starts
            ends = [round(e / step) * step for e in ends]
        else:
            ends = []
        while c.words_done < len(words) and c.words_done < len(ends):
            end = max(ends[c.words_done], c.committed_ms)
            if not final and end > have_ms:
                break
            i, word = c.words_done, words[c.words_done]
            seg = pcm[round(c.committed_ms * SAMPLES_PER_MS) : round(end * SAMPLES_PER_MS)].tobytes()
            if seg:
                self.queue.append(("audio", seg))
            if c.pipecat_word_start is None:
                c.pipecat_word_start = c.committed_ms
            t.pipecat_starts.append((c.pipecat_base + c.pipecat_word_start, word))
            t.queued_ms += end - c.committed_ms
            name = f"{MARK_PREFIX}w{c.turn}.{c.index}.{i}:{mark_word(word)}"
            whole = bytes(c.word_audio) + seg  # all of the word's audio (a resume replays it)
            self._mark(Mark(name, c.turn, "w", word, t.queued_ms, t.queued_ms - len(whole) / 16, audio=whole))
            c.committed_ms, c.words_done = end, i + 1
            c.word_audio, c.pipecat_word_start = bytearray(), None
        if not final and words and c.words_done == len(words) - 1 and (len(pts) == len(words) or len(words) == 1):
            # only the clause's last word is left: it ends with the clause, so its audio can go out as
            # it arrives (the mark follows at the end)
            if c.pipecat_word_start is None:
                c.pipecat_word_start = c.committed_ms
            step = FRAME_SAMPLES / SAMPLES_PER_MS
            upto = (have_ms // step) * step
            if upto > c.committed_ms:
                seg = pcm[round(c.committed_ms * SAMPLES_PER_MS) : round(upto * SAMPLES_PER_MS)].tobytes()
                self.queue.append(("audio", seg))
                c.word_audio += seg
                t.queued_ms += upto - c.committed_ms
                c.committed_ms = upto
        if final:
            rest = pcm[round(c.committed_ms * SAMPLES_PER_MS) :].tobytes()
            if rest:
                self.queue.append(("audio", rest))
                t.queued_ms += len(rest) / 2 / SAMPLES_PER_MS
            self._pipecat_end_ms = c.pipecat_base + have_ms
            name = f"{MARK_PREFIX}c{c.turn}.{c.index}"
            self._mark(Mark(name, c.turn, "c", offset_ms=t.queued_ms, audio=rest))

    @staticmethod
    def _final_ends(c: Clause, pcm: np.ndarray, words: list[str], pts: list[int]) -> list[float]:
        """End offsets of all the clause's words, the ones already queued kept as they were."""
        if c.words_done == 0:
            return word_spans(pcm, words, pts if len(pts) == len(words) else None)
        ends = [0.0] * c.words_done  # already queued
        rest_words = words[c.words_done :]
        if not rest_words:
            return ends
        tail = pcm[round(c.committed_ms * SAMPLES_PER_MS) :]
        if len(pts) == len(words) and c.voiced_start_ms is not None:
            known = [c.voiced_start_ms + (p - pts[0]) / 1e6 for p in pts[c.words_done + 1 :]]
            step = FRAME_SAMPLES / SAMPLES_PER_MS
            return ends + [round(e / step) * step for e in known] + [len(pcm) / SAMPLES_PER_MS]
        return ends + [c.committed_ms + e for e in word_spans(tail, rest_words)]

    def release(self, now_ms: float) -> list[tuple[str, Any]]:
        """Items due for the output now: audio stays at most `lead_ms` ahead of the modelled playout."""
        out: list[tuple[str, Any]] = []
        while self.queue and not self.paused:
            kind, item = self.queue[0]
            if kind == "mark" and item.kind == "s" and item.turn in self.held:
                break  # a greedy reply: everything from its start mark on waits for its release
            if kind == "audio":
                if self.play_end_ms - now_ms >= self.lead_ms:
                    break
                if self.play_end_ms <= now_ms and not self._startable():
                    break  # (re)starting playout: wait for a lead's worth, so it does not stutter
                if len(item) > RELEASE_BYTES:  # one 20 ms frame at a time: Twilio never holds more than the lead
                    self.queue[0] = (kind, item[RELEASE_BYTES:])
                    item = item[:RELEASE_BYTES]
                else:
                    self.queue.popleft()
                self.play_end_ms = max(self.play_end_ms, now_ms) + len(item) / 2 / SAMPLES_PER_MS
            else:
                item.due_ms = max(self.play_end_ms, now_ms)
                item.clear_gen = self.clear_gen
                self.queue.popleft()
            out.append((kind, item))
        return out

    @property
    def rtt_ms(self) -> float | None:
        """The round trip in audio time: echo lag of recent played marks. Delays (jitter, a slow
        Twilio start) only ever add to a played echo's lag, so the floor of the recent ones is it."""
        return min(self.lags) if self.lags else None

    def _startable(self) -> bool:
        """Enough audio queued to start playing without running dry at once: `lead_ms` of it, or the
        rest of a complete clause (its mark is queued)."""
        ms = 0.0
        for kind, item in self.queue:
            if kind == "audio":
                ms += len(item) / 2 / SAMPLES_PER_MS
                if ms >= self.lead_ms:
                    return True
            elif item.kind == "c":
                return True
        return False

    def buffered_ms(self, now_ms: float) -> float:
        """Modelled audio at Twilio not yet played."""
        return max(0.0, self.play_end_ms - now_ms)

    def echo(self, name: str, at_ms: float) -> Mark | None:
        """An echo arrived at inbound position `at_ms`; returns the resolved mark (None: unknown/late)."""
        m = self.marks.get(name)
        if m is None or m.played is not None or m.due_ms is None:
            return None
        m.echo_ms = at_ms
        lag = at_ms - m.due_ms
        if m.clear_gen == self.clear_gen or m.drained:
            m.played = True
        elif self.rtt_ms is not None:  # a clear went out after it: played only if it came as late
            m.played = lag >= self.rtt_ms - self.tolerance_ms  # as its audio needed (the round trip)
        else:  # no word echo yet this call: the turn-start mark's round trip, less exactly
            m.played = self.start_rtt_ms is not None and lag >= self.start_rtt_ms - 3 * self.tolerance_ms
        if m.played and m.kind == "s":
            self.start_rtt_ms = lag
        elif m.played:
            self.lags.append(lag)
        t = self.turn(m.turn)
        if m.kind == "s" and m.played:
            t.start_echo_ms = at_ms
        return m

    def pause(self, now_ms: float) -> None:
        """Stop releasing audio (the caller may be barging in); Twilio's buffer drains by itself."""
        if not self.paused:
            self.paused, self.paused_at_ms = True, now_ms

    def resume(self) -> None:
        self.paused, self.paused_at_ms = False, None

    def clear(self, now_ms: float) -> float:
        """The bot was interrupted: drop what is queued here; returns the modelled ms dropped at Twilio."""
        if self.paused_at_ms is not None and now_ms - self.paused_at_ms >= self.lead_ms + DRAIN_MARGIN_MS:
            # Paused long enough ago that Twilio had played all it had when the clear gets there:
            # every mark sent before the pause has played, whenever its echo comes.
            for m in self.marks.values():
                if m.due_ms is not None and m.played is None:
                    m.drained = True
        dropped_twilio = self.buffered_ms(now_ms)
        dropped_here = sum(len(i) / 2 / SAMPLES_PER_MS for k, i in self.queue if k == "audio")
        for t in self.turns.values():
            unfinished = not t.resolved or any(not m.played for m in t.marks)
            # a turn whose first audio went out before any of its word marks (cleared at once: it began while
            # the caller was talking) is interrupted too, with nothing heard
            fresh = not t.words() and t.first_release_ms is not None and not t.reply_done
            if t.interrupted_at_ms is None and ((t.marks and unfinished) or fresh):
                t.interrupted_at_ms = now_ms
                t.dropped_ms = dropped_twilio + dropped_here
                t.server_clock_words = [w for s, w in t.pipecat_starts if s <= now_ms]
        for kind, item in self.queue:
            if kind == "mark":
                item.played = False  # never sent
        self.queue.clear()
        self._pipecat_end_ms = 0.0  # Pipecat resets its word clock on an interruption
        self.clear_gen += 1
        self.play_end_ms = min(self.play_end_ms, now_ms)
        self.resume()
        return dropped_twilio + dropped_here

    def drop_turn(self, turn: int) -> int:
        """Scrap a held turn: its queued items (all after its start mark, none ever released) go, and
        the turn is forgotten. Returns the bytes of audio dropped; other turns are untouched."""
        self.held.discard(turn)
        kept: deque[tuple[str, Any]] = deque()
        dropping, dropped = False, 0
        for kind, item in self.queue:
            if kind == "mark" and item.kind == "s" and item.turn == turn:
                dropping = True
            if not dropping:
                kept.append((kind, item))
            elif kind == "audio":
                dropped += len(item)
            else:
                item.played = False
                self.marks.pop(item.name, None)
        self.queue = kept
        self.turns.pop(turn, None)
        return dropped

    def resume_tail(self, turn: TurnPlayout) -> int:
        """False interruption: queue again, with fresh marks, every word of `turn` the caller did not
        hear (from the first unheard one). Returns the number of words queued again."""
        keep: list[Mark] = []
        redo: list[Mark] = []
        for m in turn.marks:
            (redo if redo or (m.kind == "w" and not m.played) else keep).append(m)
        if not any(m.kind == "w" for m in redo):
            return 0
        turn.marks = keep
        for m in redo:
            ident, _, word = m.name.rpartition(":")
            name = f"{ident}r:{word}" if m.kind == "w" else m.name + "r"  # the word stays last
            new = Mark(name, m.turn, m.kind, m.word, m.offset_ms, m.word_start_ms, audio=m.audio)
            if new.audio:
                self.queue.append(("audio", new.audio))
            self._mark(new)
        turn.interrupted_at_ms = None
        turn.resumed += 1
        return sum(m.kind == "w" for m in redo)


class BotSpeechPlayer(FrameProcessor):
    """After the TTS, before MarkTracker: turns clauses into paced word audio + marks, resolves echoes.

    Pushes upstream: BotPlaybackFrame (the bot's audio started / is over) and MarkResolvedFrame for
    every agent mark; downstream (for the event log) the clause marks only.
    """

    def __init__(self, stream_sid: str, ledger: PlayoutLedger | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger or PlayoutLedger()
        self._stream_sid = stream_sid
        self._samples = 0
        self._texts: deque[BotClauseFrame] = deque()
        self._clauses: dict[str, Clause] = {}
        self._order: deque[str] = deque()
        self._speaking = False
        self.current_turn = 0
        self._scrapped: set[str] = set()  # TTS contexts of scrapped greedy replies: late audio goes nowhere
        self.released: dict[int, int] = {}  # bytes of audio sent to Twilio, per bot turn
        self._out_turn = 0  # the turn whose audio is going out (that of the last mark released)

    @property
    def t_ms(self) -> float:
        return self._samples / SAMPLES_PER_MS

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        led = self.ledger
        if isinstance(frame, InputAudioRawFrame):
            self._samples += len(frame.audio) // 2
            await self.push_frame(frame, direction)
            await self._release()
            return
        if isinstance(frame, BotClauseFrame):
            self._texts.append(frame)
            self.current_turn = frame.turn
            return
        if isinstance(frame, BotReplyEndFrame):
            led.turn(frame.turn).reply_done = True
            await self._update_speaking()
            return
        if isinstance(frame, BotHoldFrame):
            if frame.hold:
                led.held.add(frame.turn)
            elif frame.turn in led.held:
                led.held.discard(frame.turn)
                await self._release()
            return
        if isinstance(frame, ReplyCancelFrame) and direction == FrameDirection.DOWNSTREAM:
            self._drop_turn(frame.turn)
            return  # nothing of it was sent: Twilio needs no `clear`
        if getattr(frame, "context_id", None) in self._scrapped and isinstance(
            frame, TTSAudioRawFrame | TTSTextFrame | TTSStoppedFrame
        ):
            return
        if isinstance(frame, TTSStartedFrame):
            text = self._texts.popleft() if self._texts else BotClauseFrame(text="", turn=self.current_turn)
            cid = frame.context_id or f"ctx{len(self._clauses)}"
            self._clauses[cid] = Clause(text.turn, text.index, text.text)
            self._order.append(cid)
            return
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id in self._clauses:
            c = self._clauses[frame.context_id]
            if c.first_byte_wall is None:
                c.first_byte_wall, c.arrival_ms = time.monotonic(), self.t_ms
            c.pcm += frame.audio
            if c.voiced_start_ms is None:
                c.voiced_start_ms = _first_voiced_ms(c.pcm)
            await self._stream_clause(frame.context_id)
            return
        if isinstance(frame, TTSTextFrame) and frame.context_id in self._clauses:
            if frame.pts:
                self._clauses[frame.context_id].word_pts.extend([frame.pts] * len(frame.text.split()))
                await self._stream_clause(frame.context_id)
            return
        if isinstance(frame, TTSStoppedFrame):
            await self._finish_clauses(frame.context_id)
            return
        if isinstance(frame, BotPauseFrame):
            led.pause(self.t_ms)
        elif isinstance(frame, BotResumeFrame):
            led.resume()
            if frame.reason == "false_interruption" and self.current_turn in led.turns:
                led.resume_tail(led.turns[self.current_turn])
            await self._release()
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self._texts.clear()
            self._clauses.clear()
            self._order.clear()
            led.clear(self.t_ms)
        elif isinstance(frame, TwilioMarkFrame) and frame.mark_name.startswith(MARK_PREFIX):
            m = led.echo(frame.mark_name, self.t_ms)
            if m is not None:
                await self._resolved(m)
            return
        await self.push_frame(frame, direction)

    def _drop_turn(self, turn: int) -> None:
        """A greedy reply was scrapped: forget its clauses (late TTS audio of them is swallowed)."""
        self._texts = deque(t for t in self._texts if t.turn != turn)
        for cid in [cid for cid, c in self._clauses.items() if c.turn == turn]:
            self._clauses.pop(cid)
            self._scrapped.add(cid)
        self._order = deque(cid for cid in self._order if cid in self._clauses)
        self.ledger.drop_turn(turn)

    async def _stream_clause(self, context_id: str) -> None:
        """The oldest open clause may queue the words it already has (later ones wait their turn)."""
        if self._order and self._order[0] == context_id:
            self.ledger.feed_clause(self._clauses[context_id], final=False)
            await self._release()

    async def _finish_clauses(self, context_id: str | None) -> None:
        """A TTS context is done: queue its clause (and any earlier ones still open, in order)."""
        while self._order:
            cid = self._order.popleft()
            c = self._clauses.pop(cid, None)
            if c is not None and c.pcm:
                self.ledger.feed_clause(c, final=True)
            if cid == context_id or context_id is None:
                break
        await self._release()

    async def _release(self) -> None:
        led = self.ledger
        for kind, item in led.release(self.t_ms):
            if kind == "audio":
                t = led.turn(self._out_turn)  # audio belongs to the turn of the mark released before it
                self.released[t.turn] = self.released.get(t.turn, 0) + len(item)
                if t.first_release_wall is None:
                    t.first_release_wall, t.first_release_ms = time.monotonic(), self.t_ms
                await self.push_frame(OutputAudioRawFrame(audio=item, sample_rate=SAMPLE_RATE, num_channels=1))
            else:
                self._out_turn = item.turn
                msg = {"event": "mark", "streamSid": self._stream_sid, "mark": {"name": item.name}}
                await self.push_frame(OutputTransportMessageFrame(message=msg))
        await self._update_speaking()

    async def _update_speaking(self) -> None:
        led = self.ledger
        t = led.turns.get(self.current_turn)
        busy = bool(led.queue) or led.buffered_ms(self.t_ms) > 0 or (t is not None and not t.reply_done)
        speaking = busy and t is not None and t.first_release_ms is not None and t.interrupted_at_ms is None
        if speaking != self._speaking:
            self._speaking = speaking
            await self.push_frame(BotPlaybackFrame(speaking=speaking, t_ms=self.t_ms), FrameDirection.UPSTREAM)

    async def _resolved(self, m: Mark) -> None:
        frame = MarkResolvedFrame(mark_name=m.name, played=bool(m.played), t_ms=self.t_ms)
        await self.push_frame(frame, FrameDirection.UPSTREAM)
        if m.kind == "c":
            await self.push_frame(MarkResolvedFrame(mark_name=m.name, played=bool(m.played), t_ms=self.t_ms))
