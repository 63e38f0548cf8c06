"""One Twilio Media Stream, from the WebSocket upgrade to the call's end: authenticate before accept,
wait for `start`, run the call's pipeline, record how it ended. Its own module so that server.py only
routes WS /ws/{token} here.
"""

from __future__ import annotations

import asyncio

from fastapi import WebSocket
from loguru import logger
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from starlette.websockets import WebSocketDisconnect, WebSocketState

from callgate.audio import SAMPLE_RATE, AudioFormatError
from callgate.edge.state import CallRecord, ServerState
from callgate.edge.twilio_control import TwilioCallControl
from callgate.recording import CallRecording
from pipelines.call import CallConfig
from pipelines.factory import build_call_processors, call_worker
from pipelines.twilio_amd import TWILIO_AMD_PARAMS
from pipelines.workflow_names import UnknownWorkflowError
from processors.beep import BeepDetector
from processors.frames import TwilioStartFrame
from processors.twilio_ingest import StreamLimits, TwilioIngestSerializer, decode_message, parse_start
from twiml.tokens import TokenError

START_TIMEOUT_SECS = 10.0
MAX_MESSAGES_BEFORE_START = 50  # Twilio sends `connected` then `start`; more than this is a flood
DRAIN_AFTER_STOP_SECS = 10.0
POLICY_VIOLATION = 1008
# Webhook / API parameters passed on to the call's pipeline as <Parameter>s.
PASSTHROUGH_PARAMS = ("message", "agent", "amd", *TWILIO_AMD_PARAMS)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the socket; before accept() this answers the upgrade with HTTP 403."""
    if websocket.application_state != WebSocketState.DISCONNECTED:
        try:
            await websocket.close(code=code, reason=reason)
        except (RuntimeError, WebSocketDisconnect):
            pass


async def _await_start(state: ServerState, websocket: WebSocket) -> tuple[TwilioStartFrame | None, dict[str, int]]:
    """Read until Twilio's `start`; junk and media before it are counted and dropped."""
    counters: dict[str, int] = {}

    def count(key: str) -> None:
        counters[key] = counters.get(key, 0) + 1

    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECS
    for _ in range(MAX_MESSAGES_BEFORE_START):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None, {**counters, "no_start": 1}
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=remaining)
        except TimeoutError:
            return None, {**counters, "no_start": 1}
        if message["type"] == "websocket.disconnect":
            return None, {**counters, "disconnected_before_start": 1}
        text = message.get("text")
        msg, (problem, _) = decode_message((message.get("bytes") or b"") if text is None else text)
        if msg is None:
            count(problem)
            continue
        event = msg.get("event")
        if event == "connected":
            continue
        if event == "start":
            try:
                return parse_start(msg), counters
            except (ValueError, TypeError) as e:
                logger.warning(f"bad start message: {e}")
                count("bad_start")
                continue
        count("media_before_start" if event == "media" else "unexpected_before_start")
    return None, {**counters, "flood_before_start": 1}


async def handle_stream(state: ServerState, websocket: WebSocket, token: str) -> None:
    """One Media Stream: authenticate, wait for `start`, then run the call's pipeline until it ends.

    Nothing a client sends may escape as an unhandled ASGI exception (a dropped socket, a 1006)."""
    try:
        await _handle_stream(state, websocket, token)
    except Exception as e:
        logger.opt(exception=e).error(f"stream failed: {type(e).__name__}: {e}")
        state.reject("stream_error", f"{type(e).__name__}")
        await _close(websocket, 1011, "internal error")


async def _handle_stream(state: ServerState, websocket: WebSocket, token: str) -> None:
    settings = state.settings
    # Signature and token are checked before accept(): a refused upgrade gets HTTP 403, never a socket.
    if not state.signatures.check_websocket(websocket.url.path, websocket.headers.get("X-Twilio-Signature")):
        state.reject("websocket_signature", "stream upgrade with a bad or missing X-Twilio-Signature")
        return await _close(websocket, POLICY_VIOLATION, "invalid signature")
    try:
        grant = await state.tokens.redeem(token)
    except TokenError as e:
        state.reject("token", f"stream upgrade refused: {e}")
        return await _close(websocket, POLICY_VIOLATION, str(e))
    await websocket.accept()

    start, pre_counters = await _await_start(state, websocket)
    if start is None:
        state.reject("no_start", f"stream for {grant.call_sid} ended without a start message: {pre_counters}")
        return await _close(websocket, POLICY_VIOLATION, "no start message")
    mismatch = grant.mismatch(
        start.call_sid, start.account_sid, start.custom_parameters, ("workflow", *PASSTHROUGH_PARAMS)
    )
    if mismatch:
        state.reject("start_mismatch", f"stream for {grant.call_sid} refused: {mismatch}")
        return await _close(websocket, POLICY_VIOLATION, mismatch)

    # The webhook's choices (signed into the token), never what the client put in customParameters.
    workflow = grant.options.get("workflow") or settings.default_workflow
    control = TwilioCallControl(settings, start.call_sid, state.metrics.vendor_errors.labels("twilio").inc)
    call = CallConfig(
        control=control,
        settings=settings,
        workflow=workflow,
        call_sid=start.call_sid,
        stream_sid=start.stream_sid,
        params=dict(grant.options),
    )
    record = CallRecord(call_sid=start.call_sid, workflow=workflow, max_events=settings.max_call_events)
    recording = CallRecording(state.store, state.metrics, start.call_sid, workflow, on_event=record.add_event)
    try:
        # Building loads Silero (~50 ms) and maybe a message file: off the loop that carries live calls.
        parts = await asyncio.to_thread(
            build_call_processors, call, state.messages, recording.event, keep_events=False
        )
    except (UnknownWorkflowError, AudioFormatError, OSError, ValueError) as e:
        state.reject("bad_call_config", f"{start.call_sid}: cannot start workflow: {e}")
        return await _close(websocket, POLICY_VIOLATION, "cannot start the workflow")
    # the agent's transcript and latency report fill in as the call goes (the same lists)
    record.transcript = getattr(parts.workflow, "transcript", record.transcript)
    record.latency = getattr(parts.workflow, "latency", record.latency)

    async def _over_limits(what: str) -> None:
        state.reject("stream_limits", f"{start.call_sid}: {what} exceeded for {settings.stream_violation_secs:g} s")
        await _close(websocket, POLICY_VIOLATION, f"stream over its {what} limit")

    serializer = TwilioIngestSerializer(
        start.stream_sid,
        start.call_sid,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
        limits=StreamLimits(
            max_ahead_ms=settings.stream_max_ahead_ms,
            max_messages_per_sec=settings.stream_max_messages_per_sec,
            violation_secs=settings.stream_violation_secs,
        ),
        on_violation=_over_limits,
        hang_up_timeout_secs=settings.twilio_api_timeout_secs,
    )
    serializer.counters.update(pre_counters)
    control.serializer = serializer
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            audio_out_end_silence_secs=0,
            audio_out_auto_silence=False,
            add_wav_header=False,
            serializer=serializer,
            # A workflow that takes coarse input chunks plays recorded audio: it goes out in chunks
            # as coarse (fewer messages; Pipecat sends them at twice real time, so Twilio buffers).
            audio_out_10ms_chunks=max(4, (parts.workflow.audio_out_chunk_ms or parts.workflow.audio_chunk_ms) // 10),
        ),
    )
    beep = next((p for p in parts.processors if isinstance(p, BeepDetector)), None)
    if parts.workflow.audio_chunk_ms and beep is not None:
        # Coarse frames from the socket on (BeepDetector would chunk them anyway); every packet
        # goes through at once while it follows a tone.
        serializer.coalesce(
            parts.workflow.audio_chunk_ms,
            transport.input().push_audio_frame,
            lambda: beep.passes_packets,
            current_chunk_ms=lambda: beep.chunk_ms,
        )
    # The workflow ends the call at CALL_TIMEOUT_SECS of audio; this wall-clock backstop ends one whose
    # audio stopped coming.
    worker = call_worker([transport.input(), *parts.processors, transport.output()])
    backstop = asyncio.get_running_loop().call_later(
        settings.call_timeout_secs + 30, lambda: asyncio.ensure_future(worker.cancel())
    )

    drain_task: asyncio.Task | None = None

    async def _cancel_after_drain() -> None:
        await asyncio.sleep(DRAIN_AFTER_STOP_SECS)
        await worker.cancel()

    @transport.event_handler("on_client_disconnected")
    async def _on_disconnected(_transport, _ws) -> None:
        # The pipeline does not stop on its own when the socket closes. After a `stop`, audio still
        # queued is played through so the workflow sees the whole call; an abrupt close cancels now.
        nonlocal drain_task
        if serializer.stopped and not worker.has_finished():
            drain_task = asyncio.create_task(_cancel_after_drain())
        else:
            await worker.cancel()

    state.active[start.call_sid] = record
    state.drain.call_started(start.call_sid)
    recording.started(agent=grant.options.get("agent"))
    logger.info(f"{start.call_sid}: stream {start.stream_sid} started, workflow {workflow}")
    try:
        with logger.contextualize(call_sid=start.call_sid):
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
    except Exception as e:  # one broken call never takes the server down
        logger.exception(f"{start.call_sid}: pipeline failed: {e}")
        record.outcome = "error"
    finally:
        backstop.cancel()
        if drain_task:
            drain_task.cancel()
        record.status = "completed"
        record.outcome = record.outcome or parts.workflow.outcome or "ended"
        record.counters = {**serializer.counters, "audio_ms": round(serializer.audio_ms)}
        if record.events_dropped:
            record.counters["events_dropped"] = record.events_dropped
        for key, value in serializer.counters.items():
            state.stream_counters[key] = state.stream_counters.get(key, 0) + value
        state.active.pop(start.call_sid, None)
        state.finished[start.call_sid] = record
        recording.ended(record.outcome, record.counters)
        state.drain.call_ended(start.call_sid)
        await _close(websocket, 1000, "call ended")
        logger.info(f"{start.call_sid}: ended ({record.outcome}); stream counters {record.counters}")
