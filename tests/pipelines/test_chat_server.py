"""The loopback chat-completions server the offline LLM runs on: a local process can neither talk to it
without the key nor grow its memory."""

from __future__ import annotations

import http.client
import json

import httpx
import openai
import pytest

from pipelines.services.chat_server import MAX_BODY_BYTES, ChatCompletionsServer, ScriptedDialog

ASK = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def keyed():
    with ChatCompletionsServer(ScriptedDialog(), api_key="k-123") as server:
        yield server


def test_a_request_without_the_key_is_refused_and_the_openai_client_with_it_is_answered(keyed):
    url = f"{keyed.base_url}/chat/completions"
    assert httpx.post(url, json=ASK).status_code == 401
    assert httpx.post(url, json=ASK, headers={"Authorization": "Bearer wrong"}).status_code == 401
    stream = openai.OpenAI(api_key="k-123", base_url=keyed.base_url).chat.completions.create(**ASK)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()


def test_an_oversized_or_negative_body_length_is_refused_before_reading(keyed):
    conn = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=5)
    for length in (str(MAX_BODY_BYTES + 1), "-1", "12x"):
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Authorization", "Bearer k-123")
        conn.putheader("Content-Length", length)
        conn.endheaders()  # no body follows: the server must not wait for one
        reply = conn.getresponse()
        assert reply.status == (413 if length.isdigit() else 400)
        assert json.loads(reply.read())["error"]["message"]
        conn.close()


def test_request_bodies_are_kept_only_when_asked_and_only_the_last_ones():
    for keep, expected in ((0, 0), (2, 2)):
        with ChatCompletionsServer(ScriptedDialog(), keep_requests=keep) as server:
            for _ in range(3):
                httpx.post(f"{server.base_url}/chat/completions", json=ASK).read()
            assert len(server.requests) == expected
