"""The Deepgram stand-in speaks the v1 listen protocol: the real DeepgramSTTService, and raw sockets for faults."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from pipecat.frames.frames import InputAudioRawFrame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.tests.utils import SleepFrame, run_test
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from callgate import synth
from callgate.audio import to_int16
from simulator.vendors import DeepgramStandIn

LINE = "can you call me back tomorrow morning"


def speech_pcm(text: str = LINE) -> bytes:
    x = synth.concat(synth.silence(0.3), synth.speech(text, engine="flite", voice="kal"), synth.silence(0.8))
    return to_int16(x).tobytes()


def frames(pcm: bytes, pace: float = 0.004) -> list:
    out: list = []
    for i in range(0, len(pcm), 320):
        out += [InputAudioRawFrame(pcm[i : i + 320], 8000, 1), SleepFrame(pace)]
    return out


async def test_real_service_gets_interims_then_the_final_transcript():
    with DeepgramStandIn(transcripts=[LINE], api_key="secret") as dg:
        stt = DeepgramSTTService(
            api_key="secret", base_url=dg.base_url, sample_rate=8000,
            settings=DeepgramSTTService.Settings(interim_results=True),
        )
        down, _ = await run_test(stt, frames_to_send=[*frames(speech_pcm()), SleepFrame(0.5)], start_timeout=5)
    finals = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    interims = [f.text for f in down if isinstance(f, InterimTranscriptionFrame)]
    assert finals == [LINE]
    assert interims and all(LINE.startswith(t) for t in interims)
    final = dg.results[-1]
    assert final["is_final"] and final["speech_final"] and final["channel"]["alternatives"][0]["words"]
    q = dg.queries[0]
    assert q["encoding"] == "linear16" and q["sample_rate"] == "8000" and q["interim_results"] == "true"
    assert dg.control_messages[-1] == "CloseStream"


async def test_without_a_script_it_transcribes_with_pocketsphinx():
    with DeepgramStandIn() as dg:
        stt = DeepgramSTTService(api_key="k", base_url=dg.base_url, sample_rate=8000)
        down, _ = await run_test(stt, frames_to_send=[*frames(speech_pcm()), SleepFrame(1.5)], start_timeout=5)
    finals = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert finals and "tomorrow" in finals[0]


async def _raw(dg: DeepgramStandIn, key: str = "k"):
    return await websockets.connect(
        f"{dg.base_url}/v1/listen?encoding=linear16&sample_rate=8000&interim_results=true",
        additional_headers={"Authorization": f"Token {key}"},
    )


async def test_finalize_flushes_the_utterance_and_close_stream_sends_metadata():
    with DeepgramStandIn(transcripts=["hello there"], endpoint_ms=5000) as dg:
        ws = await _raw(dg)
        pcm = speech_pcm("hello there")
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "Finalize"}))
        msgs = []
        while not msgs or not msgs[-1].get("is_final"):
            msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert msgs[-1]["from_finalize"] is True and msgs[-1]["channel"]["alternatives"][0]["transcript"] == "hello there"
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(json.dumps({"type": "CloseStream"}))
        meta = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert meta["type"] == "Metadata" and meta["channels"] == 1 and meta["duration"] > 1
        assert dg.control_messages == ["Finalize", "KeepAlive", "CloseStream"]


async def test_first_result_latency_is_applied():
    with DeepgramStandIn(transcripts=["one two three four five six"], first_result_ms=400) as dg:
        ws = await _raw(dg)
        pcm = speech_pcm("one two three four five six")
        t0 = time.monotonic()
        await ws.send(pcm)
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert time.monotonic() - t0 >= 0.4 and first["is_final"] is False
        await ws.close()


@pytest.mark.parametrize("status", ["429", "500"])
async def test_handshake_faults_answer_the_http_status(status: str):
    with DeepgramStandIn(faults=[status]) as dg:
        with pytest.raises(InvalidStatus) as e:
            await _raw(dg)
        assert e.value.response.status_code == int(status)
        await (await _raw(dg)).close()  # the plan was one fault: the next connection is served
        assert dg.plan.served == [status, None]


async def test_missing_credentials_are_refused_with_401():
    with DeepgramStandIn(api_key="right") as dg:
        with pytest.raises(InvalidStatus) as e:
            await _raw(dg, key="wrong")
        assert e.value.response.status_code == 401


async def test_close_fault_drops_the_stream_mid_call():
    with DeepgramStandIn(default_fault="close", close_after_secs=0.5) as dg:
        ws = await _raw(dg)
        with pytest.raises(ConnectionClosedError) as e:
            for _ in range(100):
                await ws.send(bytes(320))
                await asyncio.sleep(0)
            await asyncio.wait_for(ws.recv(), 5)
        assert e.value.rcvd.code == 1011


async def test_hang_fault_never_answers():
    with DeepgramStandIn(transcripts=[LINE], default_fault="hang") as dg:
        ws = await _raw(dg)
        await ws.send(speech_pcm())
        await ws.send(json.dumps({"type": "Finalize"}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)
        await ws.close()


async def test_refused_means_nothing_listens():
    with DeepgramStandIn(refuse=True) as dg:
        with pytest.raises(OSError):
            await _raw(dg)
