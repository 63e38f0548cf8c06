"""One call's record as it happens: its public events go to the server's memory, the database (through
the store's queue, never waited on) and the metrics; the call's row follows the events.

The server makes one CallRecording per Media Stream. The agent workflow's conversation events become
transcript rows as they happen: `user_transcript` (final) is the caller's utterance, `bot_turn_end` the
agent's (what the caller heard), and the `latency` report that follows it gives the turn's latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from callgate.metrics import Metrics
from callgate.store import CallStore


class CallRecording:
    """Feeds a call's events and end into the store and the metrics."""

    def __init__(
        self,
        store: CallStore | None,
        metrics: Metrics | None,
        call_sid: str,
        workflow: str,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.call_sid = call_sid
        self.workflow = workflow
        self._on_event = on_event
        self._seq = 0
        self._metric_state: dict[str, Any] = {}
        self.marks_played = 0
        self.marks_cancelled = 0
        self.agent_turns = 0
        self._bot_text: dict[int, str] = {}
        self._pending_bot: dict[str, Any] | None = None  # an agent row waiting for its latency report

    def started(self, **fields: Any) -> None:
        if self.metrics:
            self.metrics.active_calls.inc()
        if self.store:
            self.store.update_call(
                self.call_sid, workflow=self.workflow, status="in-progress", started_at=time.time(), **fields
            )

    def event(self, event: dict[str, Any]) -> None:
        """A public call event (EventLog's callback)."""
        if self._on_event:
            self._on_event(event)
        if self.metrics:
            self.metrics.call_event(self.workflow, event, self._metric_state)
        if self.store is None:
            return
        self.store.add_event(self.call_sid, self._seq, event)
        self._seq += 1
        self._transcript_event(event)
        columns = self._columns(event)
        if columns:
            self.store.update_call(self.call_sid, **columns)

    def _columns(self, event: dict[str, Any]) -> dict[str, Any]:
        name = event.get("event")
        if name == "amd":
            return {
                "amd_label": event.get("label"),
                "amd_confidence": event.get("confidence"),
                "amd_detector": event.get("detector"),
                "amd_latency_ms": event.get("t_ms"),
            }
        if name == "beep":
            return {"beep": True, "beep_hz": event.get("hz"), "beep_onset_ms": event.get("onset_ms")}
        if name == "beep_end":
            return {"beep_end_ms": event.get("t_ms")}
        if name == "play_message":
            return {"message_started_ms": event.get("t_ms")}
        if name == "mark":
            if event.get("played"):
                self.marks_played += 1
            else:
                self.marks_cancelled += 1
            return {"marks_played": self.marks_played, "marks_cancelled": self.marks_cancelled}
        return {}

    def _transcript_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "latency" and self._pending_bot is not None and event.get("turn") == self._pending_bot["turn"]:
            played, sent = event.get("first_audio_played_ms"), event.get("first_audio_sent_ms")
            self._pending_bot["latency_ms"] = played if played is not None else sent
            self._write_pending_bot()
            return
        self._write_pending_bot()
        if name == "bot_turn_start":
            self._bot_text[int(event.get("turn", 0))] = str(event.get("text", ""))
        elif name == "user_transcript" and event.get("final", True) and event.get("text"):
            self.store.add_transcript(
                self.call_sid, self.agent_turns + 1, "caller", str(event["text"]),
                start_ms=event.get("start_ms"), end_ms=event.get("end_ms"),
            )
        elif name == "bot_turn_end":
            turn = int(event.get("turn", self.agent_turns + 1))
            self.agent_turns += 1
            said = self._bot_text.pop(turn, None)
            heard = event.get("heard") or ""
            self._pending_bot = {
                # the same shape as the workflow's own transcript: what was said, and what was heard of it
                "turn": turn, "text": said or heard, "heard": heard, "interrupted": bool(event.get("interrupted")),
                "t_ms": event.get("t_ms"),
            }

    def _write_pending_bot(self) -> None:
        row, self._pending_bot = self._pending_bot, None
        if row is None or self.store is None:
            return
        turn, text, t_ms = row.pop("turn"), row.pop("text"), row.pop("t_ms")
        self.store.add_transcript(self.call_sid, turn, "bot", text, end_ms=t_ms, **row)
        self.store.update_call(self.call_sid, agent_turns=self.agent_turns)

    def ended(self, outcome: str, counters: dict[str, int]) -> None:
        self._write_pending_bot()
        if self.metrics:
            self.metrics.active_calls.dec()
            self.metrics.call_ended(self.workflow, outcome, counters)
        if self.store:
            self.store.update_call(
                self.call_sid,
                status="completed",
                outcome=outcome,
                ended_at=time.time(),
                audio_ms=counters.get("audio_ms"),
                counters=counters,
                event_count=self._seq,
                marks_played=self.marks_played,
                marks_cancelled=self.marks_cancelled,
                agent_turns=self.agent_turns,
            )
