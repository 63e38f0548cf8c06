"""Assembles the per-call pipeline for a workflow: detectors, then the workflow, then marks and the log.

    transport.input() -> BeepDetector -> SpeechDetector -> AmdProcessor -> AmdDecisionProcessor
                      -> [before] <workflow> [TwilioAmdReporter] [after] -> MarkTracker -> EventLog
                      -> transport.output()

A workflow may bring processors of its own (`before` / `after` it): `agent` puts the STT and the
interruption handler before itself and the LLM, clause splitter, TTS and player after. The Twilio AMD
drop-in's reporter sits right behind the workflow, only when the call asked for it. BeepDetector comes
first: it forwards audio in the workflow's `audio_chunk_ms` chunks (see BeepDetector).

The server puts Twilio's WebSocket transport at the ends; `callgate replay` puts a file source and a
simulated playback there. Everything in between is the same objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor

from callgate.audio import SAMPLE_RATE
from pipelines.call import CallConfig
from pipelines.dial import ParallelDial, PowerDial
from pipelines.message import MessageCache
from pipelines.twilio_amd import TwilioAmdReporter
from pipelines.voicemail_drop import VoicemailDrop
from pipelines.workflow import Workflow
from pipelines.workflow_names import check_workflow
from processors.amd import AmdProcessor
from processors.amd_decision import AmdDecisionProcessor
from processors.beep import BeepDetector
from processors.event_log import EventLog
from processors.marks import MarkTracker
from processors.speech import SpeechDetector

WorkflowBuilder = Callable[[CallConfig, MessageCache], Workflow]


def _agent(call: CallConfig, messages: MessageCache) -> Workflow:
    """The agent named by the call's `agent` parameter, with its services (keys set, else offline)."""
    from pipelines.agent import AgentWorkflow
    from pipelines.agent_spec import load_agent
    from pipelines.services import build_agent_services

    agent = load_agent(call.params.get("agent") or DEFAULT_AGENT, call.settings)
    return AgentWorkflow(call, messages, agent, build_agent_services(call.settings, agent))


WORKFLOWS: dict[str, WorkflowBuilder] = {
    "agent": _agent,
    "voicemail_drop": lambda call, messages: VoicemailDrop(call, messages),
    "parallel_dial": lambda call, messages: ParallelDial(call),
    "power_dial": lambda call, messages: PowerDial(call),
}


DEFAULT_AGENT = "example"
AMD_PRESET_OF = {"agent": "voicemail_drop"}


def _amd_off(call: CallConfig) -> bool:
    """`amd=off` (inbound agent calls): no AMD in the pipeline; the conversation starts at once."""
    return call.workflow == "agent" and call.params.get("amd", "on").lower() in ("off", "0", "false", "no")


@dataclass
class CallProcessors:
    """The middle of a call's pipeline, with handles on the parts callers inspect."""

    processors: list[FrameProcessor]
    workflow: Workflow
    marks: MarkTracker
    events: EventLog
    amd: AmdProcessor
    decision: AmdDecisionProcessor


def build_call_processors(
    call: CallConfig,
    messages: MessageCache,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    keep_events: bool = True,
) -> CallProcessors:
    """Build fresh processors for one call (each call owns its state; only models are shared).
    `keep_events=False`: the events only go to `on_event` (the server's capped call record keeps them)."""
    s = call.settings
    workflow = WORKFLOWS[check_workflow(call.workflow)](call, messages)
    amd = AmdProcessor(
        model_path=s.amd_model_path, trace_path=s.trace_dir, call_id=call.call_sid or None, workflow=call.workflow
    )
    # agent acts on AMD like voicemail_drop does (human -> talk, machine -> the message): same preset
    preset = AMD_PRESET_OF.get(call.workflow, call.workflow)
    decision = AmdDecisionProcessor(workflow=preset, presets_path=s.amd_presets_path, recorder=amd.recorder)
    marks = MarkTracker()
    marks.set_stream_sid(call.stream_sid)
    events = EventLog(on_event=on_event, keep=keep_events)
    detectors: list[FrameProcessor] = [BeepDetector(chunk_ms=workflow.audio_chunk_ms), SpeechDetector()]
    if not _amd_off(call):
        detectors += [amd, decision]
    reporter = TwilioAmdReporter.for_call(call)  # Twilio AMD drop-in: only when the call asked for it
    before, after = getattr(workflow, "before", []), getattr(workflow, "after", [])
    processors: list[FrameProcessor] = [*detectors, *before, workflow, *([reporter] if reporter else []), *after]
    processors += [marks, events]
    return CallProcessors(
        processors=processors, workflow=workflow, marks=marks, events=events, amd=amd, decision=decision
    )


def call_worker(processors: list[FrameProcessor]) -> PipelineWorker:
    """The worker that runs a call's pipeline, live or replayed: 8 kHz both ways, no RTVI, no turn
    tracking, and no Pipecat idle timeout (its observer sees every frame every processor pushes, a queue
    and a task hop each; the workflow ends the call on audio time instead)."""
    return PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )


def warm_up(settings: Any, messages: MessageCache) -> None:
    """Build (and drop) one agent call's processors, so the models every call shares (Silero, Smart-Turn,
    the endpointer's text model, the barge-in cue, the AMD model, the offline STT's decoder processes) load
    at start-up: the first call's build took 1.5 s cold on 2 cores, and its greeting came that much late."""
    from pipelines.agent_spec import agent_names

    agents = agent_names(settings)
    if not agents:
        return  # no agent to build: the agent workflow cannot take calls anyway
    name = DEFAULT_AGENT if DEFAULT_AGENT in agents else agents[0]
    call = CallConfig(settings=settings, workflow="agent", params={"workflow": "agent", "agent": name})
    build_call_processors(call, messages)
    from processors.endpointer import shared_smart_turn

    shared_smart_turn()  # loaded lazily by the first pause otherwise: that decision came ~0.8 s late
    if not settings.deepgram_api_key or settings.vendor_fallback:
        from pipelines.services.sphinx import shared_pool

        shared_pool(settings.offline_stt_workers).warm()  # the offline STT's decoder processes start now
