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
The Media Stream itself is handled in callgate/edge/stream.py, Twilio's REST API is called through
callgate/edge/twilio_control.py, and the per-process state is callgate/edge/state.py.

Run with `callgate serve` or `python server.py`; configuration comes from environment variables
(see README.md and callgate/settings.py).
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from fastapi import FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from loguru import logger
from pydantic import Field
from twilio.base.exceptions import TwilioRestException

from callgate.audio import AudioFormatError
from callgate.drain import Drain
from callgate.edge.auth import ApiGuard
from callgate.edge.call_options import OptionError
from callgate.edge.callbacks import check_callback_url
from callgate.edge.destinations import DestinationPolicy, DestinationRefused
from callgate.edge.http_limits import BodyLimitMiddleware, check_bind, uvicorn_options
from callgate.edge.rejections import Rejections
from callgate.edge.state import ServerState
from callgate.edge.stream import PASSTHROUGH_PARAMS, handle_stream
from callgate.edge.twilio_control import twilio_client
from callgate.metrics import Metrics, monitor_loop, time_gc_pauses
from callgate.settings import Settings, get_settings
from callgate.store import CallStore, DbTokenStore, FallbackTokenStore
from pipelines.factory import WORKFLOWS, warm_up
from pipelines.message import MessageCache
from pipelines.twilio_amd import TwilioAmdFields
from processors.amd import get_shared_model
from twiml.responses import connect_stream, redirect, say_and_hangup
from twiml.signatures import SignatureChecker
from twiml.token_store import open_token_store
from twiml.tokens import StreamTokens

CAMPAIGN_ID = r"^[A-Za-z0-9_.-]{1,64}$"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


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
            if body.async_amd_status_callback:  # callgate will send a signed request there: public hosts only
                await check_callback_url(body.async_amd_status_callback, private_ok=settings.callback_private_hosts)
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
    # The store fits each value to its column (callgate/store/store.py fit_row), as for the webhook's.
    for param, column in (
        ("AnsweredBy", "answered_by"), ("From", "from_number"), ("To", "to_number"), ("Direction", "direction")
    ):
        if params.get(param):
            fields[column] = params[param]
    duration = params.get("CallDuration") or params.get("Duration")
    if duration and duration.isascii() and duration.isdigit():
        fields["twilio_duration_secs"] = int(duration)
    if status in ("busy", "no-answer", "failed", "canceled"):
        # Never reached a Media Stream: this is the call's outcome.
        fields.update(outcome=status, status="completed", ended_at=time.time())
    state.store.update_call(call_sid, **fields)
    detail = {k: params[k] for k in ("CallDuration", "AnsweredBy", "SipResponseCode", "Timestamp") if params.get(k)}
    seq = params.get("SequenceNumber", "")
    state.store.add_event(call_sid, int(seq) if seq.isascii() and seq.isdigit() else 0, {"event": f"status_{status}", **detail})


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

