"""An OpenAI stand-in: chat completions over SSE, with scripted replies, tool calls, latency and faults.

It is the project's ChatCompletionsServer (pipelines/services/chat_server.py, which speaks the protocol)
driven by a script: each request takes the next `Reply` from `replies` (text, tool calls, or a fault:
"429", "500", "close" mid-stream, "hang" until the client times out, "reset" before any byte); when
the script is used up, `default` answers (the offline ScriptedDialog unless given). `first_token_ms`
and `token_interval_ms` set the latency. `refuse=True` gives a URL where nothing listens.

    with OpenAIStandIn(replies=[Reply(fault="500"), Reply(text="Hi!")], first_token_ms=350) as oai:
        OpenAILLMService(api_key="x", base_url=oai.base_url)
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from pipelines.services.chat_server import ChatCompletionsServer, Reply, Responder, ScriptedDialog, ToolCall
from simulator.vendors.base import closed_port

__all__ = ["OpenAIStandIn", "Reply", "ToolCall"]


class OpenAIStandIn:
    """Scripted OpenAI-compatible server on loopback (its own thread); `base_url` ends in /v1."""

    def __init__(
        self,
        *,
        replies: list[Reply] | None = None,
        default: Responder | Reply | None = None,
        first_token_ms: float = 0.0,
        token_interval_ms: float = 0.0,
        hang_secs: float = 30.0,
        refuse: bool = False,
    ) -> None:
        self.replies: deque[Reply] = deque(replies or [])
        self._default = default if default is not None else ScriptedDialog()
        self._lock = threading.Lock()
        self.refuse = refuse
        self._server = (
            None
            if refuse
            else ChatCompletionsServer(
                self._respond,
                first_token_ms=first_token_ms,
                token_interval_ms=token_interval_ms,
                hang_secs=hang_secs,
                keep_requests=10_000,
            )
        )
        self._refused_port = closed_port() if refuse else 0

    def _respond(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        d = self._default
        return d if isinstance(d, Reply) else d(request)

    def script(self, *replies: Reply) -> None:
        """Queue more replies."""
        with self._lock:
            self.replies.extend(replies)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._refused_port}/v1" if self._server is None else self._server.base_url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [] if self._server is None else list(self._server.requests)

    @property
    def faults_served(self) -> dict[str, int]:
        return {} if self._server is None else self._server.faults_served

    @property
    def first_token_ms(self) -> float:
        return 0.0 if self._server is None else self._server.first_token_ms

    @first_token_ms.setter
    def first_token_ms(self, value: float) -> None:
        if self._server is not None:
            self._server.first_token_ms = value

    def start(self) -> OpenAIStandIn:
        if self._server is not None:
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> OpenAIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
