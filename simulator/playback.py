"""Twilio's outbound playback buffer, modelled in call time (ms).

Shared by the phone simulator and offline replay, which both stand where Twilio stands: audio plays
back to back, a mark falls due when the audio queued before it has played (at once if nothing is
queued), and `clear` drops what is left and releases every pending mark unplayed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

M = TypeVar("M")  # whatever the caller tracks per mark (a name, or a richer record)


@dataclass
class PlaybackBuffer(Generic[M]):
    play_end_ms: float = 0.0
    queued_ms: float = 0.0  # all audio received, including what a clear later dropped
    cleared_ms: float = 0.0
    pending: deque[tuple[float, M]] = field(default_factory=deque)

    def add_audio(self, now_ms: float, ms: float) -> bool:
        """Queue `ms` of audio; True when playback starts from idle (a `media_start`)."""
        starts = self.play_end_ms <= now_ms
        self.play_end_ms = max(self.play_end_ms, now_ms) + ms
        self.queued_ms += ms
        return starts

    def add_mark(self, now_ms: float, mark: M) -> None:
        """A mark behind the audio queued so far."""
        self.pending.append((max(self.play_end_ms, now_ms), mark))

    def pop_due(self, now_ms: float) -> M | None:
        """The next mark whose audio has finished by now (removed from the buffer), else None."""
        if self.pending and self.pending[0][0] <= now_ms:
            return self.pending.popleft()[1]
        return None

    def clear(self, now_ms: float) -> tuple[float, list[M]]:
        """Drop unplayed audio; returns the ms dropped and the marks released unplayed."""
        dropped = max(0.0, self.play_end_ms - now_ms)
        self.cleared_ms += dropped
        self.play_end_ms = min(self.play_end_ms, now_ms)
        cancelled = [m for _, m in self.pending]
        self.pending.clear()
        return dropped, cancelled

    def unplayed_ms(self, now_ms: float) -> float:
        return max(0.0, self.play_end_ms - now_ms)
