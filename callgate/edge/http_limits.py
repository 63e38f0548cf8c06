"""Request limits below the routes: body size and read time, header timeout (slow-loris), bind check.

The body limit is enforced while the body streams in (a 300 MB upload is refused after 16 KiB, never
spooled), so routes can check headers first and read the body last.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import h11
from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from callgate.edge.rejections import Rejections
from callgate.settings import Settings


class BodyLimitMiddleware:
    """413 for a body over `max_bytes` (Content-Length checked up front), 408 for one slower than `timeout`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_secs: float, reject: Rejections) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_secs = timeout_secs
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                self.reject("bad_request", "unparsable Content-Length")
                return await JSONResponse({"detail": "bad Content-Length"}, status_code=400)(scope, receive, send)
            if int(length) > self.max_bytes:
                self.reject("body_too_large", f"Content-Length {int(length)} on {scope['path']}")
                return await _too_large(self.max_bytes)(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_secs
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.reject("slow_body", f"body not received within {self.timeout_secs:g} s on {scope['path']}")
                raise HTTPException(status_code=408, detail="request body too slow") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self.reject("body_too_large", f"body over {self.max_bytes} bytes on {scope['path']}")
                    raise HTTPException(status_code=413, detail=f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over {max_bytes} bytes"}, status_code=413)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, but a connection that has not sent a whole request head in time is closed.

    uvicorn times out idle keep-alive connections but not a request head that trickles in (slow-loris)."""

    header_timeout_secs = 10.0
    on_reject: Rejections | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_secs, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no request head within the timeout: drop the connection
            if self.on_reject is not None:
                self.on_reject("slow_headers", f"no request head within {self.header_timeout_secs:g} s from {self.client}")

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._head_timer is None:
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


def uvicorn_options(settings: Settings, reject: Rejections | None = None) -> dict[str, Any]:
    """The uvicorn.Config keyword arguments every way of serving callgate uses (`reject` counts timeouts)."""
    protocol = type(
        "CallgateH11Protocol",
        (HeaderTimeoutH11Protocol,),
        {"header_timeout_secs": settings.header_timeout_secs, "on_reject": staticmethod(reject) if reject else None},
    )
    return {"http": protocol, "ws_max_size": settings.ws_max_size, "timeout_keep_alive": 5}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Dev mode (no signatures) may only listen on loopback unless ALLOW_DEV_MODE_PUBLIC=1."""
    if settings.dev_mode and not settings.allow_dev_mode_public and not is_loopback(settings.host):
        raise ValueError(
            f"dev mode (TWILIO_AUTH_TOKEN unset) refuses to listen on {settings.host}: set TWILIO_AUTH_TOKEN, "
            "bind 127.0.0.1, or set ALLOW_DEV_MODE_PUBLIC=1 if you really mean it"
        )
