"""A stand-in for Twilio's REST API (the Calls resource), served in-process for simulated calls.

The server under test hangs up (`Status=completed`) and hands calls to a human (`Twiml=<Dial>...`)
through Twilio's REST API; pointing its TWILIO_API_BASE_URL here turns those requests into events
on the live simulated call, on that call's clock. Paths, auth and error bodies follow Twilio's, so
Pipecat's auto hang-up and the twilio client work against it unchanged.
"""

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from simulator.ids import new_sid
from simulator.serve import BackgroundServer


class PhoneCall(Protocol):
    """What the stand-in needs of a live simulated call (simulator.phone.PhoneCall; no import of it, so
    phone.py and rest.py do not import each other)."""

    call_sid: str | None
    account_sid: str | None
    to_number: str
    from_number: str
    ended_by: str | None

    @property
    def t_ms(self) -> int: ...

    def hangup(self, by: str = "rest") -> bool: ...

    def redirect(self, *, twiml: str | None = None, url: str | None = None) -> bool: ...

# No `from __future__ import annotations` here: FastAPI must evaluate the routes' Annotated[...,
# Depends(guard)] hints, and `guard` is a closure it could not find by name.
API = "/2010-04-01/Accounts/{account_sid}"
TERMINAL = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})
OnCreate = Callable[[dict[str, Any]], Awaitable[Any] | Any]


def _now() -> str:
    return format_datetime(datetime.now(UTC), usegmt=True)  # Twilio's RFC 2822 dates


def twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Twilio's error body: what the twilio client and Pipecat parse (`code` 20404 = call gone)."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class CallRecord:
    """A call the stand-in knows: created through Calls.json or placed by a PhoneCall."""

    sid: str
    account_sid: str
    to: str
    from_: str
    status: str = "queued"
    direction: str = "outbound-api"
    params: dict[str, str] = field(default_factory=dict)
    handle: "PhoneCall | None" = None
    date_created: str = field(default_factory=_now)
    date_updated: str = field(default_factory=_now)
    start_time: str | None = None
    end_time: str | None = None
    duration: str | None = None

    def resource(self) -> dict[str, Any]:
        """The JSON shape of Twilio's Call resource."""
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "date_created": self.date_created,
            "date_updated": self.date_updated,
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": self.params.get("AnsweredBy"),
            "api_version": "2010-04-01",
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {
                name: f"{uri}/{name.title().replace('_', '')}.json"
                for name in (
                    "notifications",
                    "recordings",
                    "payments",
                    "events",
                    "siprec",
                    "streams",
                    "user_defined_message_subscriptions",
                    "user_defined_messages",
                )
            },
        }


class RestStandIn:
    """Twilio's Calls REST resource on http://host:port (0 = ephemeral); use as `async with`.

    With `account_sid` and `auth_token` set, HTTP Basic auth must match (401 / 20003 otherwise) and the
    path's AccountSid must be that account; unset = accept anything. Every request is appended to
    `requests`; created calls to `calls_created` (and passed to `on_create`, which may be async: it then
    runs as a task, e.g. a test placing a PhoneCall to the created call's Url).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        account_sid: str | None = None,
        auth_token: str | None = None,
        on_create: OnCreate | None = None,
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.on_create = on_create
        self.calls: dict[str, CallRecord] = {}
        self.calls_created: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = self._build_app()
        self._server = BackgroundServer(self.app, host=host, port=port)

    @property
    def base_url(self) -> str:
        """What the server under test takes as TWILIO_API_BASE_URL (valid once started)."""
        return self._server.base_url

    @property
    def port(self) -> int:
        """The bound port (valid once started)."""
        return self._server.port

    async def start(self) -> "RestStandIn":
        """Start serving (OSError if the port is taken)."""
        await self._server.start()
        return self

    async def stop(self) -> None:
        """Stop serving and cancel on_create tasks still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()

    async def __aenter__(self) -> "RestStandIn":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- registry of live simulated calls

    def attach(self, call: "PhoneCall") -> CallRecord:
        """Make a running PhoneCall reachable by its CallSid (done by PhoneCall.run)."""
        assert call.call_sid is not None and call.account_sid is not None
        rec = self.calls.get(call.call_sid)
        if rec is None:
            rec = CallRecord(call.call_sid, call.account_sid, call.to_number, call.from_number)
            self.calls[rec.sid] = rec
        rec.handle, rec.status, rec.start_time = call, "in-progress", _now()
        return rec

    def detach(self, call: "PhoneCall") -> None:
        """The PhoneCall finished; after a redirect the call itself lives on (bridged to a human)."""
        rec = self.calls.get(call.call_sid or "")
        if rec is None or rec.handle is not call:
            return
        rec.handle = None
        rec.date_updated = _now()
        if call.ended_by != "update" and rec.status not in TERMINAL:
            rec.status = "completed"
        if rec.status in TERMINAL:
            rec.end_time = rec.end_time or _now()
            rec.duration = str(call.t_ms // 1000)

    # ---- HTTP

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Twilio REST stand-in", openapi_url=None, docs_url=None, redoc_url=None)
        basic = HTTPBasic(auto_error=False)

        async def guard(
            request: Request, account_sid: str, creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]
        ) -> dict[str, str]:
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
            self.requests.append({"method": request.method, "path": request.url.path, "form": form})
            if self.account_sid and self.auth_token:
                ok = (
                    creds is not None
                    and secrets.compare_digest(creds.username, self.account_sid)
                    and secrets.compare_digest(creds.password, self.auth_token)
                )
                if not ok:
                    raise _Reply(
                        twilio_error(
                            401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
                        )
                    )
                if account_sid != self.account_sid:
                    raise _Reply(self._not_found(request))
            return form

        @app.exception_handler(_Reply)
        async def _reply(_: Request, exc: _Reply) -> JSONResponse:
            return exc.response

        @app.post(API + "/Calls.json")
        async def create_call(
            account_sid: str, form: Annotated[dict[str, str], Depends(guard)]
        ) -> JSONResponse:
            if not form.get("To"):
                return twilio_error(400, 21201, "No 'To' number is specified")
            if not form.get("From"):
                return twilio_error(400, 21213, "No 'From' number is specified")
            if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
                return twilio_error(400, 21205, "Url parameter is required.")
            rec = CallRecord(new_sid("CA"), account_sid, form["To"], form["From"], params=form)
            self.calls[rec.sid] = rec
            created = {"sid": rec.sid, "account_sid": account_sid, **form}
            self.calls_created.append(created)
            if self.on_create is not None:
                result = self.on_create(created)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            return JSONResponse(rec.resource(), status_code=201)

        @app.get(API + "/Calls/{call_sid}.json")
        async def fetch_call(
            request: Request, call_sid: str, _: Annotated[dict[str, str], Depends(guard)]
        ) -> JSONResponse:
            rec = self.calls.get(call_sid)
            return JSONResponse(rec.resource()) if rec else self._not_found(request)

        @app.post(API + "/Calls/{call_sid}.json")
        async def update_call(
            request: Request, call_sid: str, form: Annotated[dict[str, str], Depends(guard)]
        ) -> JSONResponse:
            rec = self.calls.get(call_sid)
            if rec is None or (rec.status in TERMINAL and "Status" in form):
                return self._not_found(request)  # 20404: Pipecat reads it as "already hung up"
            call = rec.handle
            if call is not None:
                self.requests[-1]["t_ms"] = call.t_ms
            status = form.get("Status")
            if status in ("completed", "canceled"):
                if call is not None:
                    call.hangup(by="rest")
                rec.status = "canceled" if rec.status == "queued" else "completed"
                rec.end_time = _now()
            elif status:
                return twilio_error(400, 21218, f"Invalid value '{status}' for Status")
            elif form.get("Twiml") or form.get("Url"):
                if rec.status in TERMINAL:
                    return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
                if call is not None:
                    call.redirect(twiml=form.get("Twiml"), url=form.get("Url"))
            rec.date_updated = _now()
            return JSONResponse(rec.resource())

        return app

    @staticmethod
    def _not_found(request: Request) -> JSONResponse:
        return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")


class _Reply(Exception):
    """Short-circuits a route from its auth dependency with a ready Twilio-style response."""

    def __init__(self, response: JSONResponse):
        super().__init__(response.status_code)
        self.response = response
