"""A small OpenAI-compatible chat-completions server (SSE streaming, tool calls) on loopback.

Two users: the offline default LLM (`ScriptedDialog`, so Pipecat's real OpenAILLMService has something to
talk to with no key) and the OpenAI stand-in for tests (simulator/vendors/openai.py), which adds
per-request scripts, latency and faults. It speaks the wire protocol the `openai` client expects:
`POST /v1/chat/completions` answered with `text/event-stream` chunks (`chat.completion.chunk`, the
tool-call deltas, a usage chunk, `data: [DONE]`) in HTTP/1.1 chunked encoding, so a connection cut
mid-stream is an error the client sees (an incomplete chunked body), as with a real server.

It runs on its own thread (stdlib ThreadingHTTPServer), so it never shares an event loop with a call.
Though it listens on loopback only, the server's own instances (the offline dialog, the farewell) want a
per-process random bearer key, as OpenAI does, and refuse bodies over MAX_BODY_BYTES: another local
process can neither talk to a call's LLM nor make the call server's memory grow. Request bodies are kept
(`requests`) only where a test asks for them (`keep_requests`); a server process keeps none.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "close", "hang", "reset")
MAX_BODY_BYTES = 4 * 1024 * 1024  # a long call's whole history is well under this


@dataclass
class ToolCall:
    """A function call the reply asks for (arguments as a dict; sent as a JSON string)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """What one request gets: text tokens, then tool calls; or a fault instead.

    fault: "429" / "500" (an HTTP error with an OpenAI error body), "close" (the connection is cut after
    `close_after_tokens` tokens), "hang" (headers never come: the client times out), "reset" (the
    connection is closed before any response).
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    fault: str | None = None
    first_token_ms: float | None = None
    close_after_tokens: int = 2

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r} (one of {', '.join(FAULTS)})")


Responder = Callable[[dict[str, Any]], Reply]


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message of a chat-completions request ('' if none)."""
    for m in reversed(request.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def offered_tools(request: dict[str, Any]) -> set[str]:
    """Names of the functions the request offers."""
    return {t.get("function", {}).get("name", "") for t in request.get("tools", []) or []}


class ScriptedDialog:
    """The offline default 'LLM': a fixed, polite appointment dialog. Not a language model.

    It answers by rule: a goodbye ends the call (`end_call` when offered), asking for a person transfers
    (`transfer_to_human`), anything else gets the next line of the script. Real conversations need a
    real LLM (set OPENAI_API_KEY or OPENAI_BASE_URL).
    """

    LINES = (
        "Great, thanks. I can help with that. Which day works best for you?",
        "Got it. Would morning or afternoon be better?",
        "Perfect, you're all set. Is there anything else I can help you with?",
        "Okay. Is there anything else?",
    )
    GOODBYE = re.compile(r"\b(bye|goodbye|that's all|that is all|no thanks|no thank you|hang up)\b")
    PERSON = re.compile(r"\b(person|human|agent|representative|operator|someone)\b")

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages", [])
        if messages and messages[-1].get("role") == "tool":
            return Reply(text="")  # the tool already did what was needed
        tools = offered_tools(request)
        said = last_user_text(request).lower()
        if self.GOODBYE.search(said):
            calls = [ToolCall("end_call", {"reason": "caller said goodbye"})] if "end_call" in tools else []
            return Reply(text="Thank you for your time. Goodbye!", tool_calls=calls)
        if self.PERSON.search(said):
            calls = [ToolCall("transfer_to_human", {})] if "transfer_to_human" in tools else []
            return Reply(text="Of course, let me connect you with a person.", tool_calls=calls)
        turns = sum(1 for m in messages if m.get("role") == "user")
        return Reply(text=self.LINES[min(max(turns - 1, 0), len(self.LINES) - 1)])


class FarewellDialog:
    """What a call hears when its real LLM cannot recover: one polite line, then `end_call`."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages", [])
        if messages and messages[-1].get("role") == "tool":
            return Reply(text="")
        calls = [ToolCall("end_call", {"reason": "vendor_failure"})] if "end_call" in offered_tools(request) else []
        return Reply(text=self.message, tool_calls=calls)


def _tokens(text: str) -> list[str]:
    """Word-sized tokens with their spaces, like a real streaming LLM's deltas."""
    return re.findall(r"\S+\s*", text)


class ChatCompletionsServer:
    """OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 (port 0 = any free port), on a thread.

    `responder(request_json) -> Reply` decides each answer; `first_token_ms` is the delay before the first
    content byte and `token_interval_ms` the gap between tokens. `requests` keeps the last `keep_requests`
    request bodies (for tests; none by default). With `api_key`, a request must carry it as a bearer token.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        first_token_ms: float = 0.0,
        token_interval_ms: float = 0.0,
        hang_secs: float = 30.0,
        keep_requests: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.responder = responder
        self.first_token_ms = first_token_ms
        self.token_interval_ms = token_interval_ms
        self.hang_secs = hang_secs
        self.api_key = api_key
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep_requests)
        self.faults_served: dict[str, int] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The URL to give OpenAILLMService(base_url=...) / OPENAI_BASE_URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatCompletionsServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="chat-server"
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ChatCompletionsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, request: dict[str, Any], reply: Reply) -> None:
        with self._lock:
            self.requests.append(request)
            if reply.fault:
                self.faults_served[reply.fault] = self.faults_served.get(reply.fault, 0) + 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def _refused(self, status: int, message: str, kind: str) -> None:
                self.close_connection = True  # the unread body must not be taken for the next request
                self._json(status, {"error": {"message": message, "type": kind}}, {"Connection": "close"})

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                if server.api_key is not None and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), f"Bearer {server.api_key}".encode()
                ):
                    self._refused(401, "missing or wrong API key", "invalid_request_error")
                    return
                declared = self.headers.get("Content-Length") or "0"
                if not (declared.isascii() and declared.isdigit()):
                    self._refused(400, "bad Content-Length", "invalid_request_error")
                    return
                length = int(declared)
                if length > MAX_BODY_BYTES:
                    self._refused(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error")
                    return
                raw = self.rfile.read(length) if length else b""
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                try:
                    request = json.loads(raw or b"{}")
                    reply = server.responder(request)
                except Exception as e:  # a bad request or a responder bug is a 400, never a dead server
                    self._json(400, {"error": {"message": f"bad request: {e}", "type": "invalid_request_error"}})
                    return
                server._record(request, reply)
                server._serve(self, request, reply)

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, request: dict[str, Any], reply: Reply) -> None:
        fault = reply.fault
        if fault == "reset":
            h.close_connection = True
            h.connection.close()
            return
        if fault in ("429", "500"):
            code = int(fault)
            kind = "rate_limit_exceeded" if code == 429 else "server_error"
            h._json(  # type: ignore[attr-defined]
                code,
                {"error": {"message": f"stand-in {kind}", "type": kind, "code": kind}},
                {"Retry-After": "0", "Connection": "close"},
            )
            h.close_connection = True
            return
        if fault == "hang":
            self._stopping.wait(self.hang_secs)
            h.close_connection = True
            return
        delay = reply.first_token_ms if reply.first_token_ms is not None else self.first_token_ms
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        model = str(request.get("model") or "scripted")
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict | None = None) -> bytes:
            body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n".encode()

        def send(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        try:
            send(chunk({"role": "assistant", "content": ""}))
            if delay > 0:
                time.sleep(delay / 1000)
            tokens = _tokens(reply.text)
            for i, tok in enumerate(tokens):
                if fault == "close" and i >= reply.close_after_tokens:
                    h.close_connection = True
                    h.connection.shutdown(2)  # no terminating chunk: an incomplete body
                    return
                if i and self.token_interval_ms > 0:
                    time.sleep(self.token_interval_ms / 1000)
                send(chunk({"content": tok}))
            if fault == "close":
                h.close_connection = True
                h.connection.shutdown(2)
                return
            for n, call in enumerate(reply.tool_calls):
                head = {"index": n, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function"}
                send(chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}))
                send(chunk({"tool_calls": [{"index": n, "function": {"arguments": json.dumps(call.arguments)}}]}))
            send(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
            words = len(tokens)
            send(chunk(None, usage={"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}))
            send(b"data: [DONE]\n\n")
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True  # the client went away (an interruption cancels the request)


def _keyed_server(responder: Responder) -> ChatCompletionsServer:
    """One of the server process's own LLM servers: started, and wanting a random per-process key."""
    return ChatCompletionsServer(responder, api_key=secrets.token_urlsafe(24)).start()


_offline: ChatCompletionsServer | None = None
_offline_lock = threading.Lock()


def offline_dialog_server() -> ChatCompletionsServer:
    """The process-wide scripted dialog server (started on first use, on loopback)."""
    global _offline
    with _offline_lock:
        if _offline is None:
            _offline = _keyed_server(ScriptedDialog())
        return _offline


_farewell: dict[str, ChatCompletionsServer] = {}


def farewell_server(message: str) -> ChatCompletionsServer:
    """The process-wide farewell server for `message` (the LLM fallback of a failing vendor)."""
    with _offline_lock:
        if message not in _farewell:
            _farewell[message] = _keyed_server(FarewellDialog(message))
        return _farewell[message]
