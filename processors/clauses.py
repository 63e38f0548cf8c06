"""Cut the LLM's streaming reply into clauses for the TTS while it is still generating.

The first clause is short (it ends at the first punctuation after `first_min_words` words, or at
`first_max_words`), so the first audio starts early; later clauses end at punctuation once they have
`min_words`, or at `max_words`. Each clause goes to the TTS as its own TTSSpeakFrame (so it is
synthesized and transcoded on its own and the player puts a mark after it), preceded by a
BotClauseFrame carrying its text; a BotReplyEndFrame closes the reply.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.agent_frames import (
    BotClauseFrame,
    BotReplyEndFrame,
    BotSayFrame,
    BotTurnStartFrame,
    LlmFirstTokenFrame,
    TtsRequestFrame,
)

_BREAK = re.compile(r"[,;:.!?]\s*$|[.!?]\"?\s*$")
_SENTENCE_END = re.compile(r"[.!?;:]\"?$")


@dataclass
class ClauseSplitter:
    """Text deltas in, clauses out (no frames, no asyncio)."""

    first_min_words: int = 1
    first_max_words: int = 5
    min_words: int = 4
    max_words: int = 18
    _buf: str = ""
    emitted: list[str] = field(default_factory=list)

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            clause = self._next_clause()
            if clause is None:
                return out
            out.append(clause)
            self.emitted.append(clause)

    def _next_clause(self) -> str | None:
        # Only whole words are considered: the text after the last space may still grow.
        complete, _, _ = self._buf.rpartition(" ")
        words = complete.split()
        first = not self.emitted
        lo, hi = (self.first_min_words, self.first_max_words) if first else (self.min_words, self.max_words)
        for i, w in enumerate(words, start=1):
            strong = _SENTENCE_END.search(w) is not None
            weak = w.endswith(",")
            if (i >= lo and (strong or weak)) or (strong and not first) or i >= hi:
                return self._take(words[:i])
        return None

    def _take(self, words: list[str]) -> str:
        text = " ".join(words)
        rest = self._buf.lstrip()
        # drop the taken words from the buffer, keeping the rest as it came
        for w in words:
            rest = rest[rest.index(w) + len(w) :]
        self._buf = rest.lstrip()
        return text

    def flush(self) -> str | None:
        text = " ".join(self._buf.split())
        self._buf = ""
        if text:
            self.emitted.append(text)
            return text
        return None

    def reset(self) -> None:
        self._buf = ""
        self.emitted = []


class ClauseProcessor(FrameProcessor):
    """Between the LLM and the TTS: LLM text -> one TTSSpeakFrame per clause (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.splitter = ClauseSplitter()
        self.turn = 0
        self._first_token = True
        self._clause_count: dict[int, int] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame):
            self.splitter.reset()
            self._first_token = True
            return
        if isinstance(frame, LLMTextFrame):
            if self._first_token and frame.text.strip():
                self._first_token = False
                await self.push_frame(LlmFirstTokenFrame(turn=self.turn, wall=time.monotonic()), FrameDirection.UPSTREAM)
            for clause in self.splitter.feed(frame.text):
                await self._speak(clause)
            return
        if isinstance(frame, LLMFullResponseEndFrame):
            rest = self.splitter.flush()
            if rest:
                await self._speak(rest)
            await self.push_frame(BotReplyEndFrame(turn=self.turn))
            return
        if isinstance(frame, BotTurnStartFrame):
            self.turn = frame.turn
            return
        if isinstance(frame, BotSayFrame):
            await self._say(frame.text, frame.turn)
            return
        if isinstance(frame, InterruptionFrame):
            self.splitter.reset()
        await self.push_frame(frame, direction)

    async def _say(self, text: str, turn: int) -> None:
        """A scripted utterance (first message, goodbye, voicemail): clauses without the LLM."""
        self.turn = turn
        self.splitter.reset()
        for clause in self.splitter.feed(text + " "):
            await self._speak(clause)
        rest = self.splitter.flush()
        if rest:
            await self._speak(rest)
        await self.push_frame(BotReplyEndFrame(turn=turn))

    async def _speak(self, clause: str) -> None:
        index = self._clause_count.get(self.turn, 0)
        self._clause_count[self.turn] = index + 1
        await self.push_frame(BotClauseFrame(text=clause, turn=self.turn, index=index))
        await self.push_frame(TtsRequestFrame(turn=self.turn, wall=time.monotonic()), FrameDirection.UPSTREAM)
        await self.push_frame(TTSSpeakFrame(text=clause, append_to_context=False))
