"""agent: a person talks with an LLM voice agent on the Twilio leg.

Outbound, AMD decides first: a human starts the conversation (the agent greets first, or waits for
the caller's "Hello?", per agent file); a machine gets the voicemail message after the beep (the
voicemail_drop logic, VoicemailLeaver); an IVR or intercept is hung up on. Inbound calls with
`amd=off` start the conversation at once.

    input -> VAD -> beep -> AMD -> decision -> STT -> InterruptionProcessor -> AgentWorkflow
          -> LLM -> ClauseProcessor -> TTS -> BotSpeechPlayer -> MarkTracker -> EventLog -> output

The workflow owns the LLM context and the call's transcript: a user turn ends on the semantic endpointer's
final turn end (processors/endpointer.py; with LISTEN_ENDPOINTER_ENDS_TURNS off, at VAD end) plus the
STT's final transcript. Greedy replies (LISTEN_GREEDY_REPLIES): on the endpointer's *tentative* end the
LLM is asked at once with the words so far (the STT's interim words; with LISTEN_FINALIZE_ON_TENTATIVE the
tentative end also has the STT finalize them, processors/endpointer.py) and its reply is synthesized but held at the player
(BotHoldFrame); the final end releases it if the final words are the same (compared as words: case and
punctuation aside, `same_words`), else (the caller went on, or the STT's final differs) it is scrapped
(ReplyCancelFrame: no audio of it was sent, and its user message leaves the context) and, on a changed
text, asked again. The reply's assistant message is what the caller heard (BotSpeechPlayer's marks), so
after a barge-in the context holds exactly the words played before the `clear`. The LLM's tools:
transfer_to_human (the <Dial> hand-off), end_call (goodbye, then hang up once its last mark is
played), leave_voicemail (the voicemail message now).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    FunctionCallResultProperties,
    InterimTranscriptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.agent_spec import AgentSpec
from pipelines.call import CallConfig
from pipelines.message import MessageCache
from pipelines.services import AgentServices
from pipelines.voicemail_drop import VoicemailLeaver, greeting_end_silence_for, resolve_message
from pipelines.workflow import Workflow
from processors.agent_frames import (
    AgentEventFrame,
    BargeInFrame,
    BotHoldFrame,
    BotPlaybackFrame,
    BotResumeFrame,
    BotSayFrame,
    BotTurnStartFrame,
    LlmFirstTokenFrame,
    ReplyCancelFrame,
    TtsRequestFrame,
)
from processors.bot_speech import BotSpeechPlayer, TurnPlayout
from processors.clauses import ClauseProcessor
from processors.endpointer import EndpointAnalyzer, SemanticEndpointer, load_listen_preset, text_tokens
from processors.frames import (
    AmdVerdictFrame,
    BeepEndFrame,
    BeepFrame,
    MarkResolvedFrame,
    SpeechEndedFrame,
    SpeechStartedFrame,
    TurnCancelledFrame,
    TurnEndFrame,
    UserTurnStartFrame,
)
from processors.gate import BackgroundSpeechGate, GateAnalyzer
from processors.interruption import (
    InterruptionAnalyzer,
    InterruptionParams,
    InterruptionProcessor,
    Verdict,
    shipped_cue,
    takes_floor,
)
from processors.vad_bridge import VadFrameBridge

STT_FINAL_WAIT_MS = 1200.0  # after VAD end: use the interim text if no final comes by then
STT_DECODE_WAIT_MS = 10_000.0  # ... but while the offline STT still decodes the speech, wait up to this
MARK_RESOLVE_WAIT_MS = 2000.0  # after a clear: marks whose echo never came count as not played
DEFAULT_GOODBYE = "Thank you for your time. Goodbye!"

TOOLS = [
    FunctionSchema(
        "transfer_to_human", "Transfer the caller to a human agent when they ask for one.", {}, []
    ),
    FunctionSchema("end_call", "End the call politely once the conversation is over.", {}, []),
    FunctionSchema(
        "leave_voicemail", "You reached an answering machine or voicemail: leave the message.", {}, []
    ),
]


def same_words(a: str, b: str) -> bool:
    """The same words, case and punctuation aside ("Nine o'clock is fine." = "nine o'clock is fine"): an
    STT's interim and final differ in those, and an LLM's reply to either is the same."""
    return text_tokens(a) == text_tokens(b)


@dataclass
class GreedyReply:
    """A reply asked on a tentative turn end, held at the player until the final end confirms it."""

    turn: int
    text: str
    message: dict[str, Any]
    start: float | None
    latency: TurnLatency
    tools: list[str] = field(default_factory=list)  # tool calls it made: run only once confirmed


@dataclass
class TurnLatency:
    """One bot reply's voice-to-voice latency and its parts (ms)."""

    turn: int
    speech_end_ms: float  # audio time the caller stopped speaking
    vad_end_wall: float  # when the VAD reported it (wall clock)
    vad_end_lag_ms: float  # audio time between the speech end and the VAD's report (endpointing)
    greedy: bool = False  # asked on a tentative turn end, held until the final one
    turn_end_wall: float | None = None  # when the turn was closed (endpointer's final end + STT final)
    stt_final_wall: float | None = None
    llm_request_wall: float | None = None
    llm_first_token_wall: float | None = None
    tts_request_wall: float | None = None
    parts: dict[str, float] = field(default_factory=dict)

    def report(self, turn: TurnPlayout) -> dict[str, Any]:
        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000, 1)

        speech_end_wall = self.vad_end_wall - self.vad_end_lag_ms / 1000
        sent = ms(speech_end_wall, turn.first_release_wall)
        out: dict[str, Any] = {
            "turn": self.turn,
            "speech_end_ms": round(self.speech_end_ms),
            "endpointing_ms": round(self.vad_end_lag_ms, 1),
            "stt_final_ms": ms(self.vad_end_wall, self.stt_final_wall) if self.stt_final_wall else 0.0,
            "llm_asked_ms": ms(speech_end_wall, self.llm_request_wall),  # greedy: before the turn closed
            "llm_first_token_ms": ms(self.llm_request_wall, self.llm_first_token_wall),
            "tts_first_byte_ms": ms(self.tts_request_wall, turn.first_byte_wall),
            "first_audio_sent_ms": sent,
            "first_audio_played_ms": (
                None if turn.start_echo_ms is None else round(turn.start_echo_ms - self.speech_end_ms, 1)
            ),
            "turn_closed_ms": ms(speech_end_wall, self.turn_end_wall),
            "greedy": self.greedy,
        }
        # the critical path: the turn closing (endpointer + STT final; else VAD end + STT final), then the
        # LLM and the TTS; a greedy reply overlaps them, so it has no such sum
        closing = ["turn_closed_ms"] if out["turn_closed_ms"] is not None else ["endpointing_ms", "stt_final_ms"]
        known = [out[k] for k in (*closing, "llm_first_token_ms", "tts_first_byte_ms")]
        if sent is not None and all(v is not None for v in known) and not self.greedy:
            out["pipeline_ms"] = round(sent - sum(known), 1)
        return out


class AgentWorkflow(Workflow):
    """The conversation (see module docstring). `before`/`after`: its processors around it."""

    name = "agent"

    def __init__(
        self, call: CallConfig, messages: MessageCache, agent: AgentSpec, services: AgentServices, **kwargs: Any
    ) -> None:
        super().__init__(call, **kwargs)
        s = call.settings
        self.agent = agent
        self.services = services
        params = InterruptionParams(
            barge_in_min_ms=s.barge_in_min_ms,
            backchannel_max_ms=s.backchannel_max_ms,
            transcript_wait_ms=s.backchannel_transcript_wait_ms,
            early_threshold=s.barge_in_early_threshold,
        )
        self.interruption = InterruptionProcessor(InterruptionAnalyzer(params))
        self.clauses = ClauseProcessor()
        self.player = BotSpeechPlayer(call.stream_sid)
        self.player.ledger.lead_ms = s.bot_audio_lead_ms
        # Listening (issue 9): only the caller's speech (the gate, in filter mode) reaches the STT bridge,
        # the barge-in handler and this workflow; the endpointer decides when the caller's turn ended.
        listen = load_listen_preset("agent", s.listen_presets_path)
        self.gate = BackgroundSpeechGate(GateAnalyzer(listen.gate), filter_vad=True)
        if params.early_threshold <= 1:  # the early cue starts on caller-level frames only
            self.interruption.analyzer.cue, self.interruption.analyzer.level_gate = shipped_cue(), self.gate.analyzer
        # LISTEN_FINALIZE_ON_TENTATIVE: the endpointer's tentative end has the STT finalize its words then
        # (with and without greedy replies); else, and in the VAD mode, Pipecat's Finalize at the VAD stop only
        self.endpointer = SemanticEndpointer(
            self.gate.analyzer, EndpointAnalyzer(listen.endpointer),
            finalize_stt=s.listen_endpointer_ends_turns and s.listen_finalize_on_tentative,
        )
        self._turn_end_final = False
        self._tentative = False
        self._endpointer_ends_turns = s.listen_endpointer_ends_turns
        self._greedy_on = s.listen_endpointer_ends_turns and s.listen_greedy_replies
        self._greedy: GreedyReply | None = None
        self._ended_by_endpointer = False  # the caller's speech end came from the endpointer, not the VAD
        self.before: list[FrameProcessor] = [
            self.gate, VadFrameBridge(), services.stt, self.endpointer, self.interruption
        ]
        self.after: list[FrameProcessor] = [services.llm, self.clauses, services.tts, self.player]
        self.leaver = VoicemailLeaver(self, resolve_message(call, messages), greeting_end_silence_for(call))
        # the LLM service carries agent.system_prompt as its system instruction
        self.context = LLMContext(messages=[], tools=ToolsSchema(TOOLS))
        for tool in ("transfer_to_human", "end_call", "leave_voicemail"):
            services.llm.register_function(tool, self._tool)
        amd_off = call.params.get("amd", "on").lower() in ("off", "0", "false", "no")
        self.phase = "conversation" if amd_off else "amd"  # amd | conversation | voicemail | ending
        self.greet_first = agent.greeting_first
        self.transcript: list[dict[str, Any]] = []
        self.latency: list[dict[str, Any]] = []
        self.turn = 0
        self._started = False
        self._user_speaking = False
        self._user_start_ms: float | None = None
        self._user_end_ms: float | None = None
        self._user_end_wall = 0.0
        self._user_end_lag = 0.0
        # speech given up as wordless noise (start, end): its words may still be on their way (a final
        # travels as data, and the audio frames behind it overtake it), so a late final revives it
        self._wordless: tuple[float, float] | None = None
        self._finals: list[str] = []
        self._interim = ""
        self._final_wall: float | None = None
        self._bot_speaking = False
        self._pending: dict[int, TurnLatency] = {}
        self._finalized: set[int] = set()
        self._spoke: set[int] = set()  # LLM turns whose reply has text
        self._hangup_after: int | None = None
        # end_call / transfer_to_human: act once the reply that called the tool has played (turn, tool)
        self._after_reply: tuple[int, str] | None = None
        self._cleared_at_ms: float | None = None
        self._reopened: tuple[int, float] | None = None
        self._late_from: Any = None  # the misjudged backchannel/noise decision a late turn was made of  # (turn, when): resumed after a false interruption
        self._answered_before_ms = 0.0
        self._last_user: tuple[int, str, float | None, dict[str, Any]] | None = None

    # --- AMD -------------------------------------------------------------------------------------

    async def on_verdict(self, frame: AmdVerdictFrame) -> None:
        if self.phase != "amd":
            return
        self.leaver.verdict(frame.label)
        if frame.label == "human":
            self.phase = "conversation"
            await self._start_conversation()
        elif frame.label in ("ivr", "carrier_intercept"):
            await self.hang_up(f"amd_{frame.label}")
        else:  # machine, unknown: the message after the beep or the greeting's end
            self.phase = "voicemail"

    async def on_beep(self, frame: BeepFrame) -> None:
        if self.phase in ("amd", "voicemail"):
            self.leaver.beep()

    async def on_beep_end(self, frame: BeepEndFrame) -> None:
        if self.phase in ("amd", "voicemail"):
            if self.leaver.policy.beep_end():
                self.phase = "voicemail"
                await self.leaver.play()

    async def _start_conversation(self) -> None:
        if self._started:
            return
        self._started = True
        await self.action("conversation_start", agent=self.agent.name)
        self._answered_before_ms = self.t_ms  # the caller's "Hello?" so far is answered by the greeting
        if self.greet_first or (self._user_end_ms is not None and not self._user_speaking):
            await self._say(self.agent.first_message or "Hello!")

    # --- caller speech ---------------------------------------------------------------------------

    async def on_speech_start(self, frame: SpeechStartedFrame) -> None:
        if self.phase in ("amd", "voicemail"):
            self.leaver.speech_start(frame)
        if self._bot_speaking and self.interruption.analyzer.state != "interrupted":
            return  # the interruption analyzer decides what this is
        self._ended_by_endpointer = False
        if not self._user_speaking:
            await self._caller_resumed(frame.t_ms)

    async def _caller_resumed(self, t_ms: float) -> None:
        self._user_speaking = True
        if self._greedy is not None:
            await self._scrap_greedy("caller_resumed")
        if self._reply_pending():
            await self._retract_reply()  # the caller went on talking before the reply was heard
        if self._user_start_ms is None:
            self._user_start_ms, self._wordless = t_ms, None

    async def on_speech_end(self, frame: SpeechEndedFrame) -> None:
        if self.phase in ("amd", "voicemail"):
            self.leaver.speech_end(frame)
        if not self._user_speaking:
            return
        self._user_speaking = False
        self._user_end_ms = frame.t_ms
        self._user_end_wall = time.monotonic()
        self._user_end_lag = self.t_ms - frame.t_ms
        await self._maybe_end_user_turn()
        await self._maybe_greedy()

    def _endpointer_silence(self, frame: TurnEndFrame) -> None:
        """The endpointer (on the gate's caller windows, every 32 ms) ends a turn before the VAD's stop,
        whose silence hangover is longer: its end is the caller's speech end, so a greedy reply need not
        wait for the VAD (the VAD's stop, when it comes, finds the caller already silent)."""
        if not self._endpointer_ends_turns or not self._user_speaking or self.phase != "conversation":
            return
        self._user_speaking, self._ended_by_endpointer = False, True
        self._user_end_ms = frame.t_ms - frame.silence_ms
        self._user_end_wall = time.monotonic()
        self._user_end_lag = frame.silence_ms

    async def _on_transcript(self, frame: TranscriptionFrame | InterimTranscriptionFrame) -> None:
        if isinstance(frame, TranscriptionFrame) and frame.text.strip() and self._revive_wordless():
            self._turn_end_final = True  # the turn had ended; its words make it one after all
        if not self._user_speaking and self._user_end_ms is None:
            # No caller turn is open: this is the STT's late word on speech that was not made a turn
            # (over the bot, judged a backchannel or noise before its final came; or a turn already
            # closed on its interim). Kept, it would be taken for the start of the caller's *next*
            # turn, and every later turn would answer the line before it.
            text = frame.text.strip()
            decisions = self.interruption.analyzer.decisions
            last = decisions[-1] if decisions else None
            misjudged = (
                isinstance(frame, TranscriptionFrame) and takes_floor(text) and self.phase == "conversation"
                and last is not None and last.verdict in (Verdict.BACKCHANNEL, Verdict.NOISE)
                and last is not self._late_from
            )
            if not misjudged:
                return
            # ... unless it is the final of speech over the bot that was judged a backchannel or noise
            # on too few words, and its words take the floor ("yes I can talk now", judged on "yes I"):
            # the caller did speak to the bot, so it is their turn, now.
            self._late_from = last
            onset = last.onset_ms
            await self._event("late_turn", text=text, onset_ms=round(onset))
            self._user_start_ms, self._user_end_ms = onset, self.t_ms
            self._user_end_wall, self._user_end_lag = time.monotonic(), 0.0
            self._turn_end_final = True
        if isinstance(frame, TranscriptionFrame):
            if frame.text.strip():
                self._finals.append(frame.text.strip())
                self._final_wall = time.monotonic()
            self._interim = ""
            await self._maybe_end_user_turn()
        else:
            self._interim = frame.text.strip()
        await self._maybe_greedy()

    def _revive_wordless(self) -> bool:
        """A final for speech already given up as wordless (no caller turn open since): that speech is
        the caller's turn again. Words later than the STT could take belong to nothing: False."""
        w, self._wordless = self._wordless, None
        if w is None or self._user_speaking or self._user_end_ms is not None:
            return False
        if self.t_ms - w[1] > STT_DECODE_WAIT_MS + STT_FINAL_WAIT_MS:
            return False
        self._user_start_ms, self._user_end_ms = w
        self._user_end_wall, self._user_end_lag = time.monotonic(), self.t_ms - w[1]
        return True

    async def _record_last_words(self, text: str) -> None:
        """The STT's final for a caller turn still open when the call ended (the caller hung up while
        their words were being decoded): it goes into the transcript and the call record, unanswered."""
        if not text or (not self._user_speaking and self._user_end_ms is None and not self._revive_wordless()):
            return
        text = " ".join([*self._finals, text])
        start, end = self._user_start_ms, self._user_end_ms if self._user_end_ms is not None else self.t_ms
        self._finals, self._interim, self._user_start_ms, self._user_end_ms = [], "", None, None
        await self._caller_said(text, start, end, after_end=True)

    async def _caller_said(self, text: str, start: float | None, end: float, **details: Any) -> None:
        """A caller turn's words: a transcript row and the `user_transcript` event (the call record's row)."""
        self.transcript.append({"role": "caller", "text": text, "start_ms": round(start or end), "end_ms": round(end)})
        await self._event(
            "user_transcript", text=text, final=True, start_ms=round(start or end), end_ms=round(end), **details
        )

    async def _maybe_end_user_turn(self, timeout: bool = False) -> None:
        if self._user_speaking or self._user_end_ms is None or self.ended:
            return
        if self._endpointer_ends_turns and not self._turn_end_final:
            return  # the endpointer has not ended the turn: a pause, not an end
        text = " ".join(self._finals)
        if not text and not (timeout and self._interim):
            return
        text = " ".join([text, self._interim]).strip() if timeout else text
        start, end = self._user_start_ms, self._user_end_ms
        self._finals, self._interim, self._user_start_ms, self._user_end_ms = [], "", None, None
        self._turn_end_final = False
        self.interruption.analyzer.turn_taken()
        await self._caller_said(text, start, end)
        if self._greedy is not None and (self.phase != "conversation" or not self._started or self.ended):
            await self._scrap_greedy("conversation_over")
        if self.phase == "amd":
            return  # "Hello?" before the verdict: answered when the conversation starts
        if self.phase != "conversation":
            return
        if not self._started:
            await self._start_conversation()
            return
        if start is not None and start < self._answered_before_ms:
            self.context.add_message({"role": "user", "content": text})  # heard; the greeting answers it
            return
        g, self._greedy = self._greedy, None
        if g is not None and same_words(g.text, text) and g.start == start:
            await self._confirm_greedy(g, text)
            return
        if g is not None:
            self._greedy = g
            await self._scrap_greedy("text_changed")
        ends = self.agent.end_call_phrases
        if any(p and p in text.lower() for p in ends):
            await self._goodbye()
            return
        message, lat = await self._ask(text, end)
        lat.turn_end_wall = time.monotonic()
        self._last_user = (self.turn, text, start, message)

    async def _ask(self, text: str, end: float | None, *, hold: bool = False) -> tuple[dict[str, Any], TurnLatency]:
        """The caller's words go into the context and the LLM is asked for bot turn `self.turn + 1`."""
        message = {"role": "user", "content": text}
        self.context.add_message(message)
        self.turn += 1
        lat = TurnLatency(self.turn, end if end is not None else self.t_ms, self._user_end_wall, self._user_end_lag)
        lat.stt_final_wall = self._final_wall if self._final_wall and self._final_wall > self._user_end_wall else None
        lat.llm_request_wall = time.monotonic()
        lat.greedy = hold
        self._pending[self.turn] = lat
        if not hold:
            self._final_wall = None
        if hold:  # before any of its frames: system frames overtake the LLM request
            await self.push_frame(BotHoldFrame(turn=self.turn, hold=True))
        await self.push_frame(BotTurnStartFrame(turn=self.turn))
        await self.push_frame(LLMContextFrame(context=self.context))
        return message, lat

    # --- greedy replies ----------------------------------------------------------------------------

    def _words_so_far(self) -> str:
        return " ".join([*self._finals, self._interim]).strip()

    async def _maybe_greedy(self) -> None:
        """On a tentative turn end (caller silent, words known): ask the LLM now, hold the reply."""
        if not (self._greedy_on and self._tentative) or self._user_speaking or self._user_end_ms is None:
            return
        if self.ended or self.phase != "conversation" or not self._started:
            return
        text = self._words_so_far()
        start = self._user_start_ms
        if not text or (start is not None and start < self._answered_before_ms):
            return
        if any(p and p in text.lower() for p in self.agent.end_call_phrases):
            return  # a goodbye is said when the turn really ends
        if self._greedy is not None:
            if same_words(self._greedy.text, text):
                return
            await self._scrap_greedy("text_changed")  # the STT's words changed: ask again
        message, lat = await self._ask(text, self._user_end_ms, hold=True)
        self._greedy = GreedyReply(self.turn, text, message, start, lat)
        await self._event("greedy_reply", turn=self.turn, text=text)

    async def _scrap_greedy(self, reason: str) -> None:
        """The held reply will not be played: stop it, drop its audio, take its words out of the context."""
        g, self._greedy = self._greedy, None
        if g is None:
            return
        self._finalized.add(g.turn)
        self._pending.pop(g.turn, None)
        await self.push_frame(ReplyCancelFrame(turn=g.turn))
        messages = self.context.get_messages()
        if any(m is g.message for m in messages):
            self.context.set_messages([m for m in messages if m is not g.message])
        await self._event("greedy_cancelled", turn=g.turn, reason=reason)

    async def _confirm_greedy(self, g: GreedyReply, text: str) -> None:
        """The final turn end kept the words: the held reply plays now (much of it may be ready). The
        context keeps the final transcript's spelling of them."""
        g.message["content"] = text
        self._last_user = (g.turn, text, g.start, g.message)
        g.latency.turn_end_wall = time.monotonic()
        if self._final_wall and self._final_wall > g.latency.vad_end_wall:
            g.latency.stt_final_wall = self._final_wall
        self._final_wall = None
        await self.push_frame(BotHoldFrame(turn=g.turn, hold=False))
        await self._event("greedy_confirmed", turn=g.turn)
        for tool in g.tools:
            await self._run_tool(tool)

    # --- bot turns -------------------------------------------------------------------------------

    async def _say(self, text: str, *, hang_up_after: bool = False) -> None:
        self.turn += 1
        if hang_up_after:
            self._hangup_after = self.turn
        await self.push_frame(BotSayFrame(text=text, turn=self.turn))

    async def _goodbye(self) -> None:
        self.phase = "ending"
        await self._say(DEFAULT_GOODBYE, hang_up_after=True)

    def _reply_pending(self) -> bool:
        """The reply to the caller's last turn is on its way, but none of its audio has gone out."""
        if self._last_user is None or self._last_user[0] != self.turn or self.turn in self._finalized:
            return False
        t = self.player.ledger.turns.get(self.turn)
        return t is None or t.first_release_ms is None

    async def _retract_reply(self) -> None:
        """Cancel that reply and reopen the caller's turn: what they say next is part of it."""
        turn, text, start, message = self._last_user  # type: ignore[misc]
        self._finalized.add(turn)
        self._pending.pop(turn, None)
        await self.broadcast_interruption()  # LLM and TTS drop the reply; nothing of it was sent
        messages = self.context.get_messages()
        if messages and messages[-1] is message:
            self.context.set_messages(messages[:-1])
        if self.transcript and self.transcript[-1].get("role") == "caller" and self.transcript[-1]["text"] == text:
            self.transcript.pop()
        self._finals, self._user_start_ms, self._last_user = [text], start, None
        await self._event("reply_retracted", turn=turn)

    async def on_barge_in(self, frame: BargeInFrame) -> None:
        await self.action("barge_in", onset_ms=round(frame.onset_ms), text=frame.text, early=frame.early)
        self._cleared_at_ms = self.t_ms
        self._reopened = None
        self._user_speaking, self._user_start_ms = True, frame.onset_ms
        if frame.speech_end_ms is not None:
            # decided on words that came after the speech had ended: the caller's turn is already over
            self._user_speaking, self._user_end_ms = False, frame.speech_end_ms
            self._user_end_wall, self._user_end_lag = time.monotonic(), self.t_ms - frame.speech_end_ms
        await self.broadcast_interruption()  # LLM and TTS cancel; the player drops its queue; Twilio `clear`

    async def on_audio(self) -> None:
        if self.phase == "conversation" and not self._started:
            await self._start_conversation()  # amd=off: the caller dialed in; the agent speaks first
        if self.phase in ("amd", "voicemail"):
            await self.leaver.tick()
            if self.leaver.play_started_ms is not None:
                self.phase = "voicemail"
        if self._user_end_ms is not None and not self._user_speaking:
            waited = self.t_ms - self._user_end_ms - self._user_end_lag
            decoding = self.services.stt_in_flight() > 0 and waited < STT_DECODE_WAIT_MS
            if waited >= STT_FINAL_WAIT_MS and not decoding:
                if self._finals or self._interim:
                    await self._maybe_end_user_turn(timeout=True)
                else:  # speech without words (noise): not a turn, unless its words come late
                    self._wordless = (self._user_start_ms or self._user_end_ms, self._user_end_ms)
                    self._user_start_ms = self._user_end_ms = None
        max_secs = self.agent.max_call_secs
        if self.t_ms >= max_secs * 1000 and self.phase == "conversation":
            await self.action("max_call_length")
            await self._goodbye()
        await self._check_turns()

    async def _check_turns(self) -> None:
        """Finish bot turns whose playout is known: complete, or interrupted and resolved."""
        for n, t in list(self.player.ledger.turns.items()):
            if n in self._finalized:
                continue
            if self._reopened and self._reopened[0] == n and t.interrupted_at_ms is not None:
                if self.t_ms - self._reopened[1] < MARK_RESOLVE_WAIT_MS:
                    continue  # the player has not queued the rest of the turn again yet
            late = self._cleared_at_ms is not None and self.t_ms - self._cleared_at_ms >= MARK_RESOLVE_WAIT_MS
            if t.interrupted_at_ms is not None and (t.resolved or late):
                await self._finish_turn(t, interrupted=True)
            elif t.complete:
                await self._finish_turn(t, interrupted=False)

    async def _reopen_turn(self) -> None:
        """A false interruption: the player says again the words of the interrupted turn that the caller
        did not hear. If that turn was already closed as interrupted (its marks resolved before the
        verdict), reopen it: its partial assistant message and transcript entry are taken back, and it
        is closed again once it has played out, with all it said."""
        n = self.player.current_turn
        t = self.player.ledger.turns.get(n)
        if t is None or not any(m.kind == "w" and not m.played for m in t.marks):
            return  # nothing the caller missed: the turn stands as it is
        self._reopened = (n, self.t_ms)
        if n not in self._finalized:
            return
        self._finalized.discard(n)
        for i in range(len(self.transcript) - 1, -1, -1):
            entry = self.transcript[i]
            if entry.get("role") == "bot" and entry.get("turn") == n:
                del self.transcript[i]
                messages = self.context.get_messages()
                heard = entry.get("heard")
                if heard and messages and messages[-1] == {"role": "assistant", "content": heard}:
                    self.context.set_messages(messages[:-1])
                break

    async def _finish_turn(self, t: TurnPlayout, *, interrupted: bool) -> None:
        self._finalized.add(t.turn)
        heard = t.heard_text if interrupted else t.text
        if heard:
            self.context.add_message({"role": "assistant", "content": heard})
        start = t.start_echo_ms if t.start_echo_ms is not None else t.first_release_ms
        played = [m.echo_ms for m in t.marks if m.played and m.echo_ms is not None]
        entry = {
            "role": "bot",
            "turn": t.turn,
            "text": t.text,
            "heard": heard,
            "interrupted": interrupted,
            "start_ms": None if start is None else round(start),
            "end_ms": round(max(played)) if played else None,
        }
        self.transcript.append(entry)
        if interrupted:
            await self._event(
                "interruption",
                turn=t.turn,
                heard_text=heard,
                dropped_ms=round(t.dropped_ms),
                server_clock_text=" ".join(t.server_clock_words or []),
            )
        await self._event("bot_turn_end", turn=t.turn, heard=heard, interrupted=interrupted)
        lat = self._pending.pop(t.turn, None)
        if lat is not None:
            report = lat.report(t)
            self.latency.append(report)
            await self._event("latency", **report)
        if self._hangup_after == t.turn:
            await self.hang_up("end_call")
        elif self._after_reply is not None and self._after_reply[0] == t.turn:
            await self._tool_after_reply(self._after_reply[1], said=bool(t.text.strip()))

    # --- tools -----------------------------------------------------------------------------------

    async def _tool(self, params: Any) -> None:
        name = params.function_name
        await params.result_callback({"ok": True}, properties=FunctionCallResultProperties(run_llm=False))
        if self._greedy is not None and self._greedy.turn == self.turn:
            self._greedy.tools.append(name)  # a held reply acts only once the turn has really ended
            return
        await self._run_tool(name)

    async def _run_tool(self, name: str) -> None:
        await self.action("tool_call", tool=name)
        if name in ("end_call", "transfer_to_human"):
            # The reply that called the tool may say something first ("Of course, let me connect you"):
            # the caller hears it before the hang-up or the hand-off (which ends the stream). Whether it
            # has words is known only once it has played out (its text may still be on its way to the TTS).
            self.phase = "ending"
            if self.turn in self._finalized:  # (already played out)
                await self._tool_after_reply(name, said=self.turn in self._spoke)
            else:
                self._after_reply = (self.turn, name)
        elif name == "leave_voicemail":
            self.phase = "voicemail"
            await self.leaver.play(trigger="agent")

    async def _tool_after_reply(self, name: str, *, said: bool) -> None:
        self._after_reply = None
        if name == "transfer_to_human":
            await self.human_action()
        elif said:  # end_call: the reply said goodbye
            await self.hang_up("end_call")
        else:
            await self._goodbye()

    # --- frames ----------------------------------------------------------------------------------

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame | InterimTranscriptionFrame):
            if not self.ended:
                await self._on_transcript(frame)
            elif isinstance(frame, TranscriptionFrame):
                await self._record_last_words(frame.text.strip())
            return  # the workflow owns the context; transcripts go no further
        if isinstance(frame, TurnEndFrame | TurnCancelledFrame | UserTurnStartFrame):
            # the endpointer's verdicts: a final end lets the turn close (with the STT's words); a
            # tentative one asks the LLM (greedy); the caller going on scraps that reply
            self._turn_end_final = isinstance(frame, TurnEndFrame) and not frame.tentative
            self._tentative = isinstance(frame, TurnEndFrame) and frame.tentative
            if isinstance(frame, TurnEndFrame):
                self._endpointer_silence(frame)
            if isinstance(frame, TurnCancelledFrame) and self._greedy is not None:
                await self._scrap_greedy("turn_cancelled")
            if (
                isinstance(frame, TurnCancelledFrame | UserTurnStartFrame) and self._ended_by_endpointer
                and not self._user_speaking and self._user_end_ms is not None
            ):  # the caller went on before the VAD ever said they had stopped: the same turn goes on
                self._ended_by_endpointer = False
                await self._caller_resumed(frame.t_ms)
            if self._turn_end_final:
                await self._maybe_end_user_turn()
            elif self._tentative:
                await self._maybe_greedy()
        elif isinstance(frame, BotPlaybackFrame):
            self._bot_speaking = frame.speaking
            if frame.speaking and self.turn in self.player.ledger.turns:
                await self._event("bot_turn_start", turn=self.turn, text=self.player.ledger.turns[self.turn].text)
        elif isinstance(frame, LlmFirstTokenFrame):
            self._spoke.add(frame.turn)
            if frame.turn in self._pending:
                lat = self._pending[frame.turn]
                lat.llm_first_token_wall = lat.llm_first_token_wall or frame.wall
        elif isinstance(frame, BotResumeFrame) and frame.reason == "false_interruption" and not self.ended:
            if self._user_end_ms is None:
                self._user_speaking, self._user_start_ms = False, None  # an early barge-in on a noise the VAD never heard
            await self._reopen_turn()
        elif isinstance(frame, TtsRequestFrame) and frame.turn in self._pending:
            self._pending[frame.turn].tts_request_wall = self._pending[frame.turn].tts_request_wall or frame.wall
        elif isinstance(frame, BargeInFrame) and not self.ended:
            await super().process_frame(frame, direction)
            await self.on_barge_in(frame)
            return
        await super().process_frame(frame, direction)

    async def on_mark(self, frame: MarkResolvedFrame) -> None:
        if await self.leaver.mark(frame):
            return
        await self._check_turns()

    async def _event(self, kind: str, **details: Any) -> None:
        logger.debug(f"{self.call.call_sid or 'replay'}: {kind} {details}")
        await self.push_frame(AgentEventFrame(kind=kind, t_ms=self.t_ms, details=details))
