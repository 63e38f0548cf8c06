"""callgate's FastAPI server: the Twilio voice webhook, the Media Streams WebSocket and the REST edge.

    POST /twiml        Twilio voice webhook -> <Connect><Stream url="wss://PUBLIC_BASE_URL/ws/<token>">
    WS   /ws/{token}   the bidirectional Media Stream; one Pipecat pipeline per call
    POST /status       Twilio status callbacks (ringing, busy, no-answer, completed, ...) into the record
    POST /calls        place an outbound call through Twilio's REST API
    GET  /calls/{sid}  a call's record: status, AMD verdict, events, transcript, stream counters
    GET  /calls        call records (?since=&outcome=&campaign=&limit=&offset=)
    GET  /healthz      liveness and active calls
    GET  /readyz       readiness: fails at once when SIGTERM starts the drain
    GET  /metrics      Prometheus metrics

Run with `callgate serve` or `python server.py`; configuration comes from environment variables
(see README.md and callgate/settings.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from cachetools import TTLCache
from fastapi import FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from callgate.audio import SAMPLE_RATE, AudioFormatError
from callgate.drain import Drain
from callgate.metrics import Metrics, monitor_loop
from callgate.recording import CallRecording
from callgate.settings import Settings, get_settings
from callgate.store import CallStore, DbTokenStore, TokenStoreUnavailable
from pipelines.call import CallConfig
from pipelines.factory import WORKFLOWS, UnknownWorkflowError, build_call_processors, check_workflow
from pipelines.message import MessageCache
from processors.amd import get_shared_model
from processors.frames import TwilioStartFrame
from processors.twilio_ingest import TwilioIngestSerializer, decode_message, parse_start
from twiml.responses import connect_stream, redirect, say_and_hangup
from twiml.signatures import SignatureChecker
from twiml.tokens import StreamTokens, TokenError

START_TIMEOUT_SECS = 10.0
DRAIN_AFTER_STOP_SECS = 10.0
POLICY_VIOLATION = 1008
# Webhook / API parameters passed on to the call's pipeline as <Parameter>s.
PASSTHROUGH_PARAMS = ("message",)


@dataclass
class CallRecord:
    """What the server knows about one call, live or recently finished."""

    call_sid: str
    workflow: str
    started_at: float = field(default_factory=time.time)
    status: str = "in-progress"
    outcome: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "workflow": self.workflow,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "events": self.events,
            "counters": self.counters,
        }


@dataclass
class ServerState:
    settings: Settings
    signatures: SignatureChecker
    tokens: StreamTokens
    messages: MessageCache
    active: dict[str, CallRecord] = field(default_factory=dict)
    finished: TTLCache = field(default_factory=lambda: TTLCache(maxsize=10_000, ttl=3600))
    stream_counters: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    store: CallStore | None = None
    token_claims: DbTokenStore | None = None
    metrics: Metrics = field(default_factory=Metrics)
    drain: Drain = field(default_factory=lambda: Drain(300.0))

    def reject(self, why: str) -> None:
        """Count a rejection; callers log first, so whoever sees the count also sees the log line."""
        self.rejected[why] = self.rejected.get(why, 0) + 1
        self.metrics.rejected.labels(why).inc()

    def refresh_gauges(self) -> None:
        """Gauges that mirror state owned elsewhere (the record writer, the drain)."""
        if self.store is not None:
            self.metrics.track_store(self.store.stats, self.store.depth)
        self.metrics.draining.set(1 if self.drain.draining else 0)


class CallRequest(BaseModel):
    """POST /calls body."""

    to: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 number to call")
    from_: str | None = Field(None, alias="from", pattern=r"^\+[1-9]\d{6,14}$")
    workflow: str = "voicemail_drop"
    message: str | None = Field(None, max_length=200, description="Message file name inside MESSAGES_DIR")
    campaign: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Campaign the call is for")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own Settings."""
    settings = settings or get_settings()
    state = ServerState(
        settings=settings,
        signatures=SignatureChecker(settings.twilio_auth_token, settings.public_base_url),
        tokens=StreamTokens(settings.token_secret or settings.twilio_auth_token, settings.token_ttl_secs),
        messages=MessageCache(settings.message_cache_dir),
        store=CallStore(settings.db_url, flush_secs=settings.db_flush_secs, queue_max=settings.db_queue_max),
        drain=Drain(settings.drain_timeout_secs),
    )
    state.token_claims = DbTokenStore(state.store.engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.dev_mode:
            banner = "=" * 72
            logger.warning(
                f"\n{banner}\n  DEV MODE: TWILIO_AUTH_TOKEN is not set. Webhook and WebSocket signatures are NOT"
                f"\n  checked and calls are not hung up through the REST API. Never expose this publicly.\n{banner}"
            )
        try:  # convert the default message and load the AMD model now, not on the first call's path
            await asyncio.to_thread(state.messages.get, settings.voicemail_message)
        except (OSError, AudioFormatError) as e:
            logger.error(f"VOICEMAIL_MESSAGE cannot be used: {e}")
        try:
            await asyncio.to_thread(get_shared_model, settings.amd_model_path)
        except (OSError, ValueError) as e:
            logger.error(f"AMD model cannot be loaded: {e}")
        await start_store(state)
        monitor = asyncio.create_task(monitor_loop(state.metrics, state.refresh_gauges))
        logger.info(f"callgate ready: webhook {settings.public_base_url}/twiml, workflows {sorted(WORKFLOWS)}")
        yield
        monitor.cancel()
        await state.store.close()

    app = FastAPI(title="callgate", version="0.1.0", lifespan=lifespan)
    app.state.callgate = state

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "dev_mode": settings.dev_mode,
            "active_calls": len(state.active),
            "stream_counters": state.stream_counters,
            "rejected": state.rejected,
        }

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = {"ready": not state.drain.draining, "draining": state.drain.draining, "live_calls": state.drain.live}
        return JSONResponse(body, status_code=503 if state.drain.draining else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        state.refresh_gauges()
        body, content_type = state.metrics.render()
        return Response(content=body, media_type=content_type)

    @app.post("/status")
    async def status_callback(request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        if not state.signatures.check_webhook(
            request.url.path, request.url.query, params, request.headers.get("X-Twilio-Signature")
        ):
            logger.warning("status callback rejected: bad or missing X-Twilio-Signature")
            state.reject("status_signature")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        if not params.get("CallSid") or not params.get("CallStatus"):
            raise HTTPException(status_code=400, detail="CallSid and CallStatus are required")
        record_status_callback(state, params)
        return Response(status_code=204)

    @app.post("/twiml")
    async def twiml(request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        query = request.url.query
        if not state.signatures.check_webhook(
            request.url.path, query, params, request.headers.get("X-Twilio-Signature")
        ):
            logger.warning("webhook rejected: bad or missing X-Twilio-Signature")
            state.reject("webhook_signature")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        call_sid = params.get("CallSid")
        if not call_sid:
            raise HTTPException(status_code=400, detail="CallSid is required")
        if state.drain.draining:
            logger.info(f"{call_sid}: draining, new call turned away ({settings.drain_action})")
            state.metrics.webhooks.labels(f"drain_{settings.drain_action}").inc()
            return Response(content=drain_twiml(settings), media_type="application/xml")
        options = {**dict(request.query_params), **params}
        workflow = options.get("workflow") or settings.default_workflow
        try:
            check_workflow(workflow)
        except UnknownWorkflowError as e:
            raise HTTPException(status_code=400, detail=str(e)) from e
        token = state.tokens.issue(call_sid)
        state.drain.expect(call_sid, settings.token_ttl_secs)
        state.metrics.webhooks.labels("stream").inc()
        state.store.update_call(
            call_sid,
            status="webhook",
            workflow=workflow,
            direction=params.get("Direction"),
            from_number=params.get("From"),
            to_number=params.get("To"),
            agent=options.get("agent"),
            campaign_id=options.get("campaign"),
        )
        parameters = {"workflow": workflow}
        parameters.update({k: options[k] for k in PASSTHROUGH_PARAMS if options.get(k)})
        xml = connect_stream(f"{settings.stream_base_url}/ws/{token}", parameters)
        return Response(content=xml, media_type="application/xml")

    @app.websocket("/ws/{token}")
    async def media_stream(websocket: WebSocket, token: str) -> None:
        await handle_stream(state, websocket, token)

    @app.post("/calls", status_code=201)
    async def place_call(body: CallRequest) -> dict[str, Any]:
        if state.drain.draining:
            raise HTTPException(status_code=503, detail="draining: this server is shutting down")
        try:
            check_workflow(body.workflow)
        except UnknownWorkflowError as e:
            raise HTTPException(status_code=400, detail=str(e)) from e
        from_number = body.from_ or settings.twilio_from_number
        if not from_number:
            raise HTTPException(status_code=400, detail="no 'from' given and TWILIO_FROM_NUMBER is not set")
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise HTTPException(
                status_code=503, detail="placing calls needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        query = {"workflow": body.workflow}
        query.update({k: v for k, v in (("message", body.message), ("campaign", body.campaign)) if v})
        client = twilio_client(settings)
        try:
            call = await client.calls.create_async(
                to=body.to,
                from_=from_number,
                url=f"{settings.public_base_url}/twiml?{urlencode(query)}",
                **status_callback_args(settings),
            )
        except TwilioRestException as e:
            state.metrics.vendor_errors.labels("twilio").inc()
            raise HTTPException(status_code=502, detail=f"Twilio refused the call: {e.msg}") from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            state.metrics.vendor_errors.labels("twilio").inc()
            raise HTTPException(status_code=502, detail=f"could not reach Twilio's REST API: {e}") from e
        finally:
            await client.http_client.close()
        state.store.update_call(
            call.sid,
            status="queued",
            twilio_status=call.status,
            direction="outbound-api",
            workflow=body.workflow,
            from_number=from_number,
            to_number=body.to,
            campaign_id=body.campaign,
        )
        return {"call_sid": call.sid, "status": call.status, "workflow": body.workflow}

    @app.get("/calls/{call_sid}")
    async def call_status(call_sid: str) -> dict[str, Any]:
        live = state.active.get(call_sid) or state.finished.get(call_sid)
        try:
            stored = await state.store.get_call(call_sid)
        except Exception as e:  # database down: what this process still remembers
            logger.warning(f"GET /calls/{call_sid}: store unavailable: {e}")
            stored = None
        if stored is None and live is None:
            raise HTTPException(status_code=404, detail="unknown call")
        if stored is None:
            return live.as_dict()
        if live is not None and live.status == "in-progress":
            stored.update(status=live.status, events=live.events)  # newer than the last flush
        return stored

    @app.get("/calls")
    async def list_calls(
        since: float | None = None,
        outcome: str | None = None,
        campaign: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        try:
            calls = await state.store.list_calls(
                since=since, outcome=outcome, campaign=campaign, limit=limit, offset=offset
            )
        except Exception as e:
            logger.error(f"GET /calls: store unavailable: {e}")
            raise HTTPException(status_code=503, detail="call records are unavailable right now") from e
        return {"calls": calls, "count": len(calls), "limit": limit, "offset": offset}

    @app.exception_handler(AudioFormatError)
    async def audio_error(_: Request, exc: AudioFormatError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    return app


class TwilioCallControl:
    """Acts on a live call through Twilio's REST API (the configured base URL)."""

    def __init__(self, settings: Settings, call_sid: str) -> None:
        self.settings = settings
        self.call_sid = call_sid
        self.serializer: TwilioIngestSerializer | None = None

    async def redirect(self, twiml: str) -> bool:
        if not (self.settings.twilio_account_sid and self.settings.twilio_auth_token):
            logger.warning(f"{self.call_sid}: dev mode, cannot update the call with new TwiML")
            return False
        if self.serializer:
            self.serializer.hand_off()  # before the EndFrame can reach it
        client = twilio_client(self.settings)
        try:
            await client.calls(self.call_sid).update_async(twiml=twiml)
            return True
        except TwilioRestException as e:
            logger.error(f"{self.call_sid}: Twilio refused the call update: {e.msg}")
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.error(f"{self.call_sid}: could not reach Twilio's REST API: {e}")
            return False
        finally:
            await client.http_client.close()


async def start_store(state: ServerState) -> None:
    """Migrate and start the record writer; a database down at start-up is logged, calls still run."""
    try:
        await asyncio.wait_for(state.store.start(), timeout=30)
        logger.info(f"call records: {state.store.backend} ({state.store.engine.url.render_as_string()})")
    except Exception as e:
        logger.error(f"call-record database unavailable at start-up ({e}); records are queued until it is back")
        await state.store.start(run_migrations=False)


def drain_twiml(settings: Settings) -> str:
    """What a new call gets while this process drains: a polite goodbye, or a redirect elsewhere."""
    if settings.drain_action == "redirect" and settings.drain_redirect_url:
        return redirect(settings.drain_redirect_url)
    return say_and_hangup(settings.drain_message)


STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


def status_callback_args(settings: Settings) -> dict[str, Any]:
    """Calls.create arguments that make Twilio report every status change to POST /status."""
    if not settings.status_callbacks:
        return {}
    return {
        "status_callback": f"{settings.public_base_url}/status",
        "status_callback_event": list(STATUS_EVENTS),
        "status_callback_method": "POST",
    }


def record_status_callback(state: ServerState, params: dict[str, str]) -> None:
    """Twilio's CallStatus (queued, initiated, ringing, in-progress, completed, busy, no-answer, failed,
    canceled) with CallDuration and AnsweredBy when present, into the call's row and events."""
    call_sid, status = params["CallSid"], params["CallStatus"][:16]
    state.metrics.status_callbacks.labels(status).inc()
    fields: dict[str, Any] = {"twilio_status": status}
    if params.get("AnsweredBy"):
        fields["answered_by"] = params["AnsweredBy"][:32]
    duration = params.get("CallDuration") or params.get("Duration")
    if duration and duration.isdigit():
        fields["twilio_duration_secs"] = int(duration)
    if params.get("From"):
        fields["from_number"] = params["From"][:32]
    if params.get("To"):
        fields["to_number"] = params["To"][:32]
    if params.get("Direction"):
        fields["direction"] = params["Direction"][:32]
    if status in ("busy", "no-answer", "failed", "canceled"):
        # Never reached a Media Stream: this is the call's outcome.
        fields.update(outcome=status, status="completed", ended_at=time.time())
    state.store.update_call(call_sid, **fields)
    detail = {k: params[k] for k in ("CallDuration", "AnsweredBy", "SipResponseCode", "Timestamp") if params.get(k)}
    seq = params.get("SequenceNumber", "")
    state.store.add_event(call_sid, int(seq) if seq.isdigit() else 0, {"event": f"status_{status}", **detail})


def twilio_client(settings: Settings) -> TwilioClient:
    """An async Twilio REST client whose base URL can point at a stand-in (the simulator)."""
    client = TwilioClient(
        settings.twilio_account_sid, settings.twilio_auth_token, http_client=AsyncTwilioHttpClient()
    )
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
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
    while True:
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
            except ValueError as e:
                logger.warning(f"bad start message: {e}")
                count("bad_start")
                continue
        count("media_before_start" if event == "media" else "unexpected_before_start")


async def claim_token_everywhere(state: ServerState, token: str) -> bool:
    """Single use across worker processes: the token must also be unclaimed in the shared database.
    If the database cannot be asked, the process's own check stands (the token is signed and expires
    within TOKEN_TTL_SECS) and the call goes on."""
    if state.token_claims is None:
        return True
    try:
        return await asyncio.wait_for(state.token_claims.claim_token(token, state.settings.token_ttl_secs), 5)
    except (TokenStoreUnavailable, TimeoutError):
        state.metrics.vendor_errors.labels("database").inc()
        return True


async def handle_stream(state: ServerState, websocket: WebSocket, token: str) -> None:
    """One Media Stream: authenticate, wait for `start`, then run the call's pipeline until it ends."""
    settings = state.settings
    signature_ok = state.signatures.check_websocket(
        websocket.url.path, websocket.headers.get("X-Twilio-Signature")
    )
    await websocket.accept()
    if not signature_ok:
        logger.warning("stream rejected: bad or missing X-Twilio-Signature on the upgrade")
        state.reject("websocket_signature")
        return await _close(websocket, POLICY_VIOLATION, "invalid signature")
    try:
        token_call_sid = state.tokens.redeem(token)
    except TokenError as e:
        logger.warning(f"stream rejected: {e}")
        state.reject("token")
        return await _close(websocket, POLICY_VIOLATION, str(e))
    if not await claim_token_everywhere(state, token):
        logger.warning(f"stream rejected: token for {token_call_sid} already used by another worker")
        state.reject("token_reused_elsewhere")
        return await _close(websocket, POLICY_VIOLATION, "stream token already used")

    start, pre_counters = await _await_start(state, websocket)
    if start is None:
        logger.warning(f"stream for {token_call_sid} ended without a start message: {pre_counters}")
        state.reject("no_start")
        return await _close(websocket, POLICY_VIOLATION, "no start message")
    if start.call_sid != token_call_sid:
        logger.warning(f"stream rejected: start.callSid {start.call_sid} != token's {token_call_sid}")
        state.reject("callsid_mismatch")
        return await _close(websocket, POLICY_VIOLATION, "callSid does not match the webhook")

    workflow = start.custom_parameters.get("workflow") or settings.default_workflow
    control = TwilioCallControl(settings, start.call_sid)
    call = CallConfig(
        control=control,
        settings=settings,
        workflow=workflow,
        call_sid=start.call_sid,
        stream_sid=start.stream_sid,
        params=start.custom_parameters,
    )
    record = CallRecord(call_sid=start.call_sid, workflow=workflow)
    recording = CallRecording(state.store, state.metrics, start.call_sid, workflow, on_event=record.events.append)
    try:
        # Building loads Silero (~50 ms) and maybe a message file: off the loop that carries live calls.
        parts = await asyncio.to_thread(build_call_processors, call, state.messages, recording.event)
    except (UnknownWorkflowError, AudioFormatError, OSError) as e:
        logger.error(f"{start.call_sid}: cannot start workflow: {e}")
        state.reject("bad_call_config")
        return await _close(websocket, POLICY_VIOLATION, str(e)[:120])

    serializer = TwilioIngestSerializer(
        start.stream_sid,
        start.call_sid,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
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
        ),
    )
    pipeline = Pipeline([transport.input(), *parts.processors, transport.output()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=settings.call_timeout_secs + 30,
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
    recording.started(agent=start.custom_parameters.get("agent"))
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
        if drain_task:
            drain_task.cancel()
        record.status = "completed"
        record.outcome = record.outcome or parts.workflow.outcome or "ended"
        record.counters = {**serializer.counters, "audio_ms": round(serializer.audio_ms)}
        for key, value in serializer.counters.items():
            state.stream_counters[key] = state.stream_counters.get(key, 0) + value
        state.active.pop(start.call_sid, None)
        state.finished[start.call_sid] = record
        recording.ended(record.outcome, record.counters)
        state.drain.call_ended(start.call_sid)
        await _close(websocket, 1000, "call ended")
        logger.info(f"{start.call_sid}: ended ({record.outcome}); stream counters {record.counters}")


def configure_logging(level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper())


app = create_app()


def main() -> None:
    """`python server.py`: serve on HOST:PORT from the environment."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()

