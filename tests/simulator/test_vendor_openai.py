"""The OpenAI stand-in speaks chat completions over SSE: the real `openai` client and Pipecat's service."""

from __future__ import annotations

import time

import openai
import pytest
from pipecat.frames.frames import LLMContextFrame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.tests.utils import SleepFrame, run_test

from simulator.vendors import OpenAIStandIn, Reply, ToolCall
from tests.pipelines.agent_call import TOOLS


def client(oai: OpenAIStandIn, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="k", base_url=oai.base_url, max_retries=0, **kw)


async def stream(c: openai.AsyncOpenAI) -> tuple[str, list, object]:
    s = await c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    text, calls, usage = "", [], None
    async for chunk in s:
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.choices and chunk.choices[0].delta.tool_calls:
            calls += chunk.choices[0].delta.tool_calls
    return text, calls, usage


async def test_streams_text_token_by_token_with_usage():
    with OpenAIStandIn(replies=[Reply(text="Hello there, how can I help?")]) as oai:
        text, calls, usage = await stream(client(oai))
    assert text == "Hello there, how can I help?" and calls == []
    assert usage.completion_tokens == 6  # word-sized tokens
    assert oai.requests[0]["stream"] is True and oai.requests[0]["messages"][0]["content"] == "hi"


async def test_first_token_latency_is_applied():
    with OpenAIStandIn(replies=[Reply(text="Hi.")], first_token_ms=300) as oai:
        t0 = time.monotonic()
        text, _, _ = await stream(client(oai))
    assert text == "Hi." and time.monotonic() - t0 >= 0.3


async def test_a_scripted_tool_call_reaches_pipecats_function_handler():
    called = []

    async def end_call(params):
        called.append(params.arguments)
        await params.result_callback({"ok": True})

    with OpenAIStandIn(replies=[Reply(text="Goodbye!", tool_calls=[ToolCall("end_call", {"reason": "done"})])]) as oai:
        llm = OpenAILLMService(api_key="k", base_url=oai.base_url)
        llm.register_function("end_call", end_call)
        ctx = LLMContext(messages=[{"role": "user", "content": "bye"}], tools=TOOLS)
        down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(ctx), SleepFrame(1.0)])
    assert called == [{"reason": "done"}]
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)) == "Goodbye!"
    assert oai.requests[0]["tools"][0]["function"]["name"] == "end_call"


@pytest.mark.parametrize(("fault", "error"), [("429", openai.RateLimitError), ("500", openai.InternalServerError)])
async def test_http_faults_are_the_clients_status_errors(fault: str, error: type[Exception]):
    with OpenAIStandIn(replies=[Reply(fault=fault), Reply(text="ok")]) as oai:
        with pytest.raises(error):
            await stream(client(oai))
        assert (await stream(client(oai)))[0] == "ok"  # the next request is served


async def test_the_clients_own_retry_gets_past_one_500():
    with OpenAIStandIn(replies=[Reply(fault="500"), Reply(text="recovered")]) as oai:
        text, _, _ = await stream(openai.AsyncOpenAI(api_key="k", base_url=oai.base_url, max_retries=1))
    assert text == "recovered" and oai.faults_served == {"500": 1}


async def test_mid_stream_close_is_a_connection_error_after_some_tokens():
    with OpenAIStandIn(replies=[Reply(text="one two three four", fault="close", close_after_tokens=2)]) as oai:
        got = ""
        with pytest.raises(openai.APIConnectionError):
            s = await client(oai).chat.completions.create(model="m", messages=[], stream=True)
            async for chunk in s:
                if chunk.choices and chunk.choices[0].delta.content:
                    got += chunk.choices[0].delta.content
    assert got == "one two "


async def test_hang_is_a_client_timeout():
    with OpenAIStandIn(replies=[Reply(fault="hang")], hang_secs=3) as oai:
        with pytest.raises(openai.APITimeoutError):
            await stream(client(oai, timeout=0.5))


async def test_refused_is_a_connection_error():
    with OpenAIStandIn(refuse=True) as oai:
        with pytest.raises(openai.APIConnectionError):
            await stream(client(oai))


async def test_unknown_fault_is_rejected():
    with pytest.raises(ValueError):
        Reply(fault="explode")
