"""callgate's FastAPI server: the Twilio voice webhook, the Media Streams WebSocket and the REST edge.

    POST /twiml        Twilio voice webhook -> <Connect><Stream url="wss://PUBLIC_BASE_URL/ws/<token>">
    WS   /ws/{token}   the bidirectional Media Stream; one Pipecat pipeline per call
    POST /status       Twilio status callbacks (ringing, busy, no-answer, completed, ...)   (Twilio signature)
    POST /calls        place an outbound call through Twilio's REST API        (API key)
    GET  /calls/{sid}  a call's record: status, AMD verdict, events, transcript (API key)
    GET  /calls        call records (?since=&outcome=&campaign=&limit=&offset=) (API key)
    GET  /stats        active calls, stream counters, rejections               (API key)
    GET  /metrics      Prometheus metrics                                      (API or metrics key)
    GET  /docs, /openapi.json                                                  (API key)
    GET  /healthz      liveness only
    GET  /readyz       readiness: fails at once when SIGTERM starts the drain

The Twilio-facing routes are authenticated by Twilio's signature and the Stream token; every other
route by a bearer API key (callgate/edge/auth.py). README "Security" says what is checked where.

Run with `callgate serve` or `python server.py`; configuration comes from environment variables
(see README.md and callgate/settings.py).
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from cachetools import TTLCache
from fastapi import FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from pydantic import Field
from starlette.websockets import WebSocketDisconnect, WebSocketState
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from callgate.audio import SAMPLE_RATE, AudioFormatError
from callgate.drain import Drain
from callgate.edge.auth import ApiGuard
from callgate.edge.call_options import OptionError, check_asset_name
from callgate.edge.destinations import DestinationPolicy, DestinationRefused
from callgate.edge.http_limits import BodyLimitMiddleware, check_bind, uvicorn_options
from callgate.edge.rejections import Rejections
from callgate.metrics import Metrics, monitor_loop, time_gc_pauses
from callgate.recording import CallRecording
from callgate.settings import Settings, get_settings
from callgate.store import CallStore, DbTokenStore, FallbackTokenStore
from pipelines.actions import CallGoneError
from pipelines.call import CallConfig
from pipelines.factory import WORKFLOWS, build_call_processors, warm_up
from pipelines.message import MessageCache
from pipelines.twilio_amd import MAX_AMD_PARAM_CHARS, TWILIO_AMD_PARAMS, TwilioAmdFields
from pipelines.workflow_names import UnknownWorkflowError, check_workflow
from processors.amd import get_shared_model
from processors.beep import BeepDetector
from processors.frames import TwilioStartFrame
from processors.twilio_ingest import StreamLimits, TwilioIngestSerializer, decode_message, parse_start
from twiml.responses import connect_stream, redirect, say_and_hangup
from twiml.signatures import SignatureChecker
from twiml.token_store import open_token_store
from twiml.tokens import StreamTokens, TokenError

START_TIMEOUT_SECS = 10.0
MAX_MESSAGES_BEFORE_START = 50  # Twilio sends `connected` then `start`; more than this is a flood
DRAIN_AFTER_STOP_SECS = 10.0
POLICY_VIOLATION = 1008
CALL_NOT_IN_PROGRESS = 21220  # Twilio REST error: "Call is not in-progress. Cannot redirect."
# Webhook / API parameters passed on to the call's pipeline as <Parameter>s.
PASSTHROUGH_PARAMS = ("message", "agent", "amd", *TWILIO_AMD_PARAMS)
CAMPAIGN_ID = r"^[A-Za-z0-9_.-]{1,64}$"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


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
    max_events: int = 2000
    events_dropped: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)  # agent: who said what, what was heard
    latency: list[dict[str, Any]] = field(default_factory=list)  # agent: per-turn voice-to-voice parts

    def add_event(self, event: dict[str, Any]) -> None:
        """Keep at most max_events per call: a call that emits without end cannot grow memory."""
        if len(self.events) < self.max_events:
            self.events.append(event)
        else:
            self.events_dropped += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "workflow": self.workflow,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "events": self.events,
            "counters": self.counters,
            "transcript": self.transcript,
            "latency": self.latency,
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
    reject: Rejections = field(default_factory=Rejections)

    @property
    def rejected(self) -> dict[str, int]:
        """Refusals by reason (state.reject(reason, why) logs at a rate-limited level, then counts)."""
        return self.reject.counts

    def check_call_options(self, options: dict[str, str]) -> dict[str, str]:
        """workflow, message, agent and amd as the call will use them; OptionError if one cannot be used."""
        workflow = options.get("workflow") or self.settings.default_workflow
        try:
            check_workflow(workflow)
        except UnknownWorkflowError as e:
            raise OptionError(str(e)) from e
        chosen = {"workflow": workflow}
        if options.get("message"):
            chosen["message"] = check_asset_name("message", options["message"], self.settings.messages_dir)
        if options.get("agent"):
            chosen["agent"] = check_asset_name(
                "agent", options["agent"], self.settings.agents_dir, any_suffix=True
            )
        if options.get("amd"):
            if options["amd"] not in ("on", "off"):
                raise OptionError("amd must be 'on' or 'off'")
            chosen["amd"] = options["amd"]
        # Twilio's AMD parameters ride along as given; the workflow validates and reports them. One that is
        # too long is refused, never cut (a cut callback URL would post AnsweredBy somewhere else).
        for k in TWILIO_AMD_PARAMS:
            if options.get(k):
                if len(value := str(options[k])) > MAX_AMD_PARAM_CHARS:
                    raise OptionError(f"{k} is longer than {MAX_AMD_PARAM_CHARS} characters")
                chosen[k] = value
        return chosen
    store: CallStore | None = None
    metrics: Metrics = field(default_factory=Metrics)
    drain: Drain = field(default_factory=lambda: Drain(300.0))

    def refresh_gauges(self) -> None:
        """Metrics that mirror state owned elsewhere (the record writer, the drain, the rejections)."""
        if self.store is not None:
            self.metrics.track_store(self.store.stats, self.store.depth)
        self.metrics.track_rejections(self.rejected)
        self.metrics.draining.set(1 if self.drain.draining else 0)


class CallRequest(TwilioAmdFields):
    """POST /calls body; also takes Twilio's AMD parameters under Twilio's names (TwilioAmdFields)."""

    to: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 number to call")
    from_: str | None = Field(None, alias="from", pattern=r"^\+[1-9]\d{6,14}$")
    workflow: str = "voicemail_drop"
    message: str | None = Field(None, max_length=128, description="Message file name inside MESSAGES_DIR")
    agent: str | None = Field(None, max_length=128, description="Agent file name inside AGENTS_DIR")
    campaign: str | None = Field(None, pattern=CAMPAIGN_ID, description="Campaign the call is for")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own Settings."""
    settings = settings or get_settings()
    store = CallStore(settings.db_url, flush_secs=settings.db_flush_secs, queue_max=settings.db_queue_max)
    metrics = Metrics()
    # Used Stream tokens: in the call-record database (every worker and host on it shares them), unless
    # TOKEN_STORE_PATH names a SQLite file of their own.
    used_tokens = (
        open_token_store(settings.token_store_path)
        if settings.token_store_path is not None
        else FallbackTokenStore(DbTokenStore(store.engine), on_fallback=metrics.vendor_errors.labels("database").inc)
    )
    state = ServerState(
        settings=settings,
        signatures=SignatureChecker(settings.twilio_auth_token, settings.public_base_url),
        tokens=StreamTokens(settings.token_secret or settings.twilio_auth_token, settings.token_ttl_secs, store=used_tokens),
        messages=MessageCache(settings.message_cache_dir),
        reject=Rejections(settings.reject_log_per_minute),
        store=store,
        metrics=metrics,
        drain=Drain(settings.drain_timeout_secs),
    )
    guard = ApiGuard(settings, state.reject)
    destinations = DestinationPolicy(settings.call_destinations)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The inference thread (processors/batching.py) hands the GIL back and forth with the loop on
        # every ONNX run and numpy call; at the default 5 ms switch interval each handoff can wait
        # 5 ms for a busy loop, so a 6 ms batch took 30-46 ms of wall time (scripts/load.py).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
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
        try:  # the conversation's models too: the first call's greeting is not late by their loading
            await asyncio.to_thread(warm_up, settings, state.messages)
        except (OSError, ValueError, RuntimeError) as e:
            logger.error(f"agent workflow cannot be built: {e}")
        if guard.open:
            logger.warning("control API open: dev mode without CALLGATE_API_KEYS (loopback only)")
        elif not settings.api_key_list:
            logger.warning("control API disabled: CALLGATE_API_KEYS is not set")
        await start_store(state)
        monitor = asyncio.create_task(monitor_loop(state.metrics, state.refresh_gauges))
        untime_gc = time_gc_pauses(state.metrics)
        # Everything loaded so far (libraries, models, the app) lives as long as the process: freeze it
        # out of the collector's reach, so a full collection walks only the calls' objects. Unfrozen, a
        # full collection took 100-500 ms at 100+ live calls, and every call of the worker stopped for it
        # (the reaction p99 tail of scripts/load.py; callgate_gc_pause_seconds).
        # Full collections also come ten times rarer (after 100 middle-generation ones, not 10): a pause
        # of tens of ms then lands on a call's critical moment ten times less often.
        gc.collect()
        gc.freeze()
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, 100)
        logger.info(f"callgate ready: webhook {settings.public_base_url}/twiml, workflows {sorted(WORKFLOWS)}")
        yield
        monitor.cancel()
        untime_gc()
        await state.store.close()

    # /docs and /openapi.json are routes of our own below, behind the API key.
    app = FastAPI(
        title="callgate", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.callgate = state
    app.state.guard = guard  # routes added elsewhere (e.g. /metrics) take their auth dependency from here
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_secs=settings.body_timeout_secs,
        reject=state.reject,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness only: no counts, versions or configuration for anonymous callers."""
        return {"status": "ok"}

    @app.get("/stats", dependencies=[guard.require_api])
    async def stats() -> dict[str, Any]:
        return {
            "draining": state.drain.draining,
            "live_calls": state.drain.live,
            "db_queue_depth": state.store.depth,
            "dev_mode": settings.dev_mode,
            "active_calls": len(state.active),
            "stream_counters": state.stream_counters,
            "rejected": state.rejected,
        }

    @app.get("/openapi.json", include_in_schema=False, dependencies=[guard.require_api])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[guard.require_api])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="callgate API")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness for load balancers: 503 from the moment SIGTERM starts the drain (no counts here)."""
        return JSONResponse({"ready": not state.drain.draining}, status_code=503 if state.drain.draining else 200)

    @app.get("/metrics", dependencies=[guard.require_metrics])
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
            state.reject("status_signature", "status callback with a bad or missing X-Twilio-Signature")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        if not params.get("CallSid") or not params.get("CallStatus"):
            raise HTTPException(status_code=400, detail="CallSid and CallStatus are required")
        record_status_callback(state, params)
        return Response(status_code=204)

    @app.post("/twiml")
    async def twiml(request: Request) -> Response:
        # Cheap checks first: signature header present, form content type; only then read the body
        # (size- and time-limited by BodyLimitMiddleware) and verify the signature over it.
        signature = request.headers.get("X-Twilio-Signature")
        if state.signatures.enforced and not signature:
            state.reject("webhook_signature", "webhook without X-Twilio-Signature")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            state.reject("webhook_content_type", f"webhook with content type {content_type[:60]!r}")
            raise HTTPException(status_code=415, detail=f"expected {FORM_CONTENT_TYPE}")
        try:
            body = (await request.body()).decode("utf-8")
            params = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=100))
        except (UnicodeDecodeError, ValueError):
            state.reject("webhook_body", "webhook body that is not a UTF-8 form")
            raise HTTPException(status_code=400, detail="malformed form body") from None
        query = request.url.query
        if not state.signatures.check_webhook(request.url.path, query, params, signature):
            state.reject("webhook_signature", "bad X-Twilio-Signature on the webhook")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        call_sid = params.get("CallSid")
        if not call_sid:
            raise HTTPException(status_code=400, detail="CallSid is required")
        account_sid = params.get("AccountSid", "")
        if settings.twilio_account_sid and account_sid != settings.twilio_account_sid:
            state.reject("account_mismatch", f"webhook for {call_sid} from another account")
            raise HTTPException(status_code=403, detail="AccountSid is not this server's account")
        if state.drain.draining:
            logger.info(f"{call_sid}: draining, new call turned away ({settings.drain_action})")
            state.metrics.webhooks.labels(f"drain_{settings.drain_action}").inc()
            return Response(content=drain_twiml(settings), media_type="application/xml")
        options = {**dict(request.query_params), **params}
        try:
            chosen = state.check_call_options(options)
        except OptionError as e:
            state.reject("call_options", f"webhook for {call_sid}: {e}")
            raise HTTPException(status_code=400, detail=str(e)) from e
        parameters = {k: chosen[k] for k in ("workflow", *PASSTHROUGH_PARAMS) if k in chosen}
        token = state.tokens.issue(call_sid, account_sid, parameters)  # `start` must match all of it
        state.drain.expect(call_sid, settings.token_ttl_secs)
        state.metrics.webhooks.labels("stream").inc()
        campaign = options.get("campaign", "")
        state.store.update_call(
            call_sid,
            status="webhook",
            workflow=chosen["workflow"],
            direction=params.get("Direction"),
            from_number=params.get("From"),
            to_number=params.get("To"),
            agent=chosen.get("agent"),
            campaign_id=campaign if re.fullmatch(CAMPAIGN_ID, campaign) else None,
        )
        xml = connect_stream(f"{settings.stream_base_url}/ws/{token}", parameters)
        return Response(content=xml, media_type="application/xml")

    @app.websocket("/ws/{token}")
    async def media_stream(websocket: WebSocket, token: str) -> None:
        await handle_stream(state, websocket, token)

    @app.post("/calls", status_code=201, dependencies=[guard.require_place_call])
    async def place_call(body: CallRequest) -> dict[str, Any]:
        if state.drain.draining:
            raise HTTPException(status_code=503, detail="draining: this server is shutting down")
        try:
            to = destinations.check(body.to)
        except DestinationRefused as e:
            state.reject("destination", f"POST /calls to {body.to}: {e}")
            raise HTTPException(status_code=403, detail=str(e)) from e
        try:
            chosen = state.check_call_options(
                {
                    "workflow": body.workflow,
                    "message": body.message or "",
                    "agent": body.agent or "",
                    **body.twilio_amd_params(),  # travels with the call; never passed on to Twilio
                }
            )
        except OptionError as e:
            state.reject("call_options", f"POST /calls: {e}")
            raise HTTPException(status_code=400, detail=str(e)) from e
        from_number = body.from_ or settings.twilio_from_number
        if not from_number:
            raise HTTPException(status_code=400, detail="no 'from' given and TWILIO_FROM_NUMBER is not set")
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise HTTPException(
                status_code=503, detail="placing calls needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        query = dict(chosen)
        if body.campaign:
            query["campaign"] = body.campaign
        client = twilio_client(settings)
        try:
            call = await asyncio.wait_for(
                client.calls.create_async(
                    to=to,
                    from_=from_number,
                    url=f"{settings.public_base_url}/twiml?{urlencode(query)}",
                    **status_callback_args(settings),
                ),
                timeout=settings.twilio_api_timeout_secs + 1,
            )
        except TwilioRestException as e:
            # Twilio's own message and code help the caller; the URI (internal API host) stays in our log.
            logger.warning(f"Twilio refused a call to {to}: {e.code} {e.msg} ({e.uri})")
            state.metrics.vendor_errors.labels("twilio").inc()
            raise HTTPException(status_code=502, detail=f"Twilio refused the call (error {e.code})") from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.error(f"could not reach Twilio's REST API at {settings.twilio_api_base_url}: {e!r}")
            state.metrics.vendor_errors.labels("twilio").inc()
            raise HTTPException(status_code=502, detail="could not reach Twilio's REST API") from e
        finally:
            await client.http_client.close()
        state.store.update_call(
            call.sid,
            status="queued",
            twilio_status=call.status,
            direction="outbound-api",
            workflow=chosen["workflow"],
            agent=chosen.get("agent"),
            from_number=from_number,
            to_number=to,
            campaign_id=body.campaign,
        )
        reply = {"call_sid": call.sid, "status": call.status, "workflow": chosen["workflow"]}
        if amd := body.twilio_amd_behaviour():  # what callgate does with each Twilio AMD parameter given
            reply["twilio_amd"] = amd
        return reply

    @app.get("/calls/{call_sid}", dependencies=[guard.require_api])
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
        if live is not None and (live.status == "in-progress" or stored.get("status") != "completed"):
            # This process served the call and knows more than the last flush did.
            stored.update(status=live.status, outcome=live.outcome or stored.get("outcome"), events=live.events)
        if live is not None and live.transcript:  # the workflow's own lists: exact, and current mid-call
            stored.update(transcript=live.transcript, latency=live.latency)
        return stored

    @app.get("/calls", dependencies=[guard.require_api])
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

    def __init__(self, settings: Settings, call_sid: str, on_error: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.call_sid = call_sid
        self.serializer: TwilioIngestSerializer | None = None
        self._on_error = on_error or (lambda: None)

    async def redirect(self, twiml: str) -> bool:
        if not (self.settings.twilio_account_sid and self.settings.twilio_auth_token):
            logger.warning(f"{self.call_sid}: dev mode, cannot update the call with new TwiML")
            return False
        if self.serializer:
            self.serializer.hand_off()  # before the EndFrame can reach it
        client = twilio_client(self.settings)
        try:
            await asyncio.wait_for(
                client.calls(self.call_sid).update_async(twiml=twiml),
                timeout=self.settings.twilio_api_timeout_secs + 1,
            )
            return True
        except TwilioRestException as e:
            if e.code == CALL_NOT_IN_PROGRESS:
                logger.info(f"{self.call_sid}: the call ended before the update reached Twilio")
                raise CallGoneError(e.msg) from e
            logger.error(f"{self.call_sid}: Twilio refused the call update: {e.msg}")
            self._on_error()
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.error(f"{self.call_sid}: could not reach Twilio's REST API: {e}")
            self._on_error()
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
    if duration and duration.isascii() and duration.isdigit():
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
    state.store.add_event(call_sid, int(seq) if seq.isascii() and seq.isdigit() else 0, {"event": f"status_{status}", **detail})


def twilio_client(settings: Settings) -> TwilioClient:
    """An async Twilio REST client whose base URL can point at a stand-in (the simulator)."""
    client = TwilioClient(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=AsyncTwilioHttpClient(timeout=settings.twilio_api_timeout_secs),
    )
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


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
    pipeline = Pipeline([transport.input(), *parts.processors, transport.output()])
    # No Pipecat idle timeout: its observer sees every frame every processor pushes (a queue and a
    # task hop each). The workflow ends the call at CALL_TIMEOUT_SECS of audio; this wall-clock
    # backstop ends one whose audio stopped coming.
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )
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


def configure_logging(level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper())


app = create_app()


def main() -> None:
    """`python server.py`: serve on HOST:PORT from the environment."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        check_bind(settings)
    except ValueError as e:
        sys.exit(f"callgate: {e}")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        **uvicorn_options(settings, app.state.callgate.reject),
    )


if __name__ == "__main__":
    main()

