"""The Cartesia stand-in speaks the TTS WebSocket: the real CartesiaTTSService, and raw sockets for faults."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
import websockets
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.tests.utils import SleepFrame, run_test
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from simulator.vendors import CartesiaStandIn
from simulator.vendors.cartesia import synthetic_speech

TEXT = "Hello there, how are you today?"


def request(text: str, cid: str = "ctx1", cont: bool = True) -> str:
    return json.dumps({
        "transcript": text, "continue": cont, "context_id": cid, "model_id": "sonic", "voice": {"mode": "id", "id": "v"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000}, "add_timestamps": True,
    })


async def raw(ct: CartesiaStandIn, key: str | None = "k"):
    headers = {"Cartesia-Version": "2025-04-16", **({"X-API-Key": key} if key else {})}
    return await websockets.connect(ct.url, additional_headers=headers)


async def test_real_service_gets_the_audio_and_word_timestamps_of_its_text():
    with CartesiaStandIn(api_key="secret") as ct:
        tts = CartesiaTTSService(api_key="secret", url=ct.url, sample_rate=8000,
                                 settings=CartesiaTTSService.Settings(voice="v"))
        frames = [LLMFullResponseStartFrame(), LLMTextFrame(TEXT), LLMFullResponseEndFrame(), SleepFrame(2.0)]
        down, _ = await run_test(tts, frames_to_send=frames, start_timeout=5)
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert words == TEXT.split()
    x, spoken = synthetic_speech(TEXT)
    assert len(audio) == len(x) * 2  # every sample arrived, at 8 kHz PCM16
    assert any(isinstance(f, TTSStoppedFrame) for f in down)  # the context's `done` arrived
    sent = ct.requests[0]
    assert sent["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000}
    assert sent["add_timestamps"] is True and sent["voice"]["id"] == "v"
    assert [w for w, _, _ in next(iter(ct.spoken.values()))] == TEXT.split()


async def test_timestamps_are_the_audio_times_of_each_word():
    with CartesiaStandIn() as ct:
        ws = await raw(ct)
        await ws.send(request(TEXT, cont=False))
        pcm, stamps = b"", None
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["type"] == "chunk":
                pcm += base64.b64decode(m["data"])
            elif m["type"] == "timestamps":
                stamps = m["word_timestamps"]
            elif m["type"] == "done":
                break
        await ws.close()
    x, words = synthetic_speech(TEXT)
    assert stamps["words"] == TEXT.split()
    assert stamps["start"] == [round(s, 3) for _, s, _ in words]
    # Each word's span is loud and the gap after it is silent: the timings are exact by construction.
    import numpy as np

    a = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    for s, e in zip(stamps["start"], stamps["end"], strict=True):
        assert np.abs(a[int(s * 8000) + 80 : int(e * 8000) - 80]).max() > 1000
        assert np.abs(a[int(e * 8000) + 8 : int(e * 8000) + 400]).max() == 0


async def test_cancel_stops_the_context_without_done():
    with CartesiaStandIn(realtime_factor=1.0) as ct:
        ws = await raw(ct)
        await ws.send(request("one two three four five six seven eight nine ten", cont=False))
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "chunk"
        await ws.send(json.dumps({"context_id": "ctx1", "cancel": True}))
        kinds = []
        try:
            while True:
                kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 0.8))["type"])
        except TimeoutError:
            pass
        await ws.close()
    assert "done" not in kinds and len(kinds) < 10 and ct.cancels == ["ctx1"]


async def test_first_audio_latency_is_applied():
    with CartesiaStandIn(first_audio_ms=300) as ct:
        ws = await raw(ct)
        t0 = time.monotonic()
        await ws.send(request("hi"))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "chunk"
        assert time.monotonic() - t0 >= 0.3
        await ws.close()


@pytest.mark.parametrize("status", ["429", "500"])
async def test_handshake_faults_answer_the_http_status(status: str):
    with CartesiaStandIn(faults=[status]) as ct:
        with pytest.raises(InvalidStatus) as e:
            await raw(ct)
        assert e.value.response.status_code == int(status)
        await (await raw(ct)).close()
        assert ct.plan.served == [status, None]


async def test_missing_api_key_is_401():
    with CartesiaStandIn() as ct:
        with pytest.raises(InvalidStatus) as e:
            await raw(ct, key=None)
        assert e.value.response.status_code == 401


async def test_close_fault_drops_the_socket_mid_audio():
    with CartesiaStandIn(default_fault="close", close_after_chunks=2) as ct:
        ws = await raw(ct)
        await ws.send(request(TEXT))
        got = []
        with pytest.raises(ConnectionClosedError) as e:
            while True:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
        assert got == ["chunk", "timestamps", "chunk"] and e.value.rcvd.code == 1011


async def test_hang_fault_never_answers_and_error_fault_answers_an_error():
    with CartesiaStandIn(faults=["hang", "error"]) as ct:
        ws = await raw(ct)
        await ws.send(request(TEXT))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)
        await ws.close()
        ws = await raw(ct)
        await ws.send(request(TEXT))
        m = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert m["type"] == "error" and m["context_id"] == "ctx1"
        await ws.close()


async def test_refused_means_nothing_listens():
    with CartesiaStandIn(refuse=True) as ct:
        with pytest.raises(OSError):
            await raw(ct)
