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


async def _results(dg: DeepgramStandIn, pcm: bytes, finalize: bool = False) -> list[dict]:
    """Stream `pcm` at once (its audio time is what counts), then read results up to the first final."""
    ws = await _raw(dg)
    await ws.send(pcm)
    if finalize:
        await ws.send(json.dumps({"type": "Finalize"}))
    msgs = []
    while not msgs or not msgs[-1].get("is_final"):
        msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    await ws.close()
    return msgs


def _transcripts(msgs: list[dict]) -> list[tuple[bool, str]]:
    return [(m["is_final"], m["channel"]["alternatives"][0]["transcript"]) for m in msgs]


async def test_interims_hold_back_the_last_word_unless_a_tail_interim_is_asked_for():
    said = "one two three four five six"
    with DeepgramStandIn(transcripts=[said], interim_every_ms=150, endpoint_ms=600) as dg:
        plain = _transcripts(await _results(dg, speech_pcm(said)))
    assert plain[-1] == (True, said) and (False, said) not in plain  # the last word only with the final
    with DeepgramStandIn(transcripts=[said], interim_every_ms=150, endpoint_ms=600, interim_tail_ms=200) as dg:
        tail = _transcripts(await _results(dg, speech_pcm(said)))
    assert tail[-2:] == [(False, said), (True, said)]  # all the words in an interim before the final


async def test_a_scripted_pair_guesses_one_text_in_interims_and_finals_another():
    guess, final = "Book a table for four.", "Book a cab for four."
    with DeepgramStandIn(transcripts=[(guess, final)], interim_every_ms=150, endpoint_ms=5000, interim_tail_ms=200,
                         interim_punctuation=False) as dg:
        got = _transcripts(await _results(dg, speech_pcm(guess), finalize=True))
    assert got[-2:] == [(False, "book a table for four"), (True, final)]  # interims unpunctuated, lower-case
    assert all("book a table for four".startswith(text) for final_, text in got if not final_)


async def test_speech_resuming_soon_after_a_finalize_is_the_rest_of_the_same_line():
    """A Finalize in a pause inside a line (a tentative turn end) ends that line with all its words; the
    rest of the line does not take the next scripted line's words."""
    line = speech_pcm("hello there")
    with DeepgramStandIn(transcripts=["hello there", "next line"], endpoint_ms=700) as dg:
        ws = await _raw(dg)
        await ws.send(line[: len(line) // 2 - 3200])  # the silence before the words and some of them
        await ws.send(json.dumps({"type": "Finalize"}))
        await ws.send(line[len(line) // 2 - 3200 :])  # the rest, and 0.8 s of quiet: the stand-in's own end
        finals = []
        while len(finals) < 2:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["is_final"]:
                finals.append((m["from_finalize"], m["channel"]["alternatives"][0]["transcript"]))
        await ws.close()
    assert finals == [(True, "hello there"), (False, "")]
    assert list(dg.transcripts) == ["next line"]


async def test_a_finalize_at_a_comma_pause_finalizes_the_words_said_so_far_and_the_rest_follows():
    head, rest = speech_pcm("hello"), speech_pcm("how are you")  # each with 0.3 s before and 0.8 s after
    with DeepgramStandIn(transcripts=["Hello, how are you?", "next line"], endpoint_ms=1500, interim_tail_ms=200,
                         interim_every_ms=1000) as dg:
        ws = await _raw(dg)
        await ws.send(head[: len(head) - 3200])  # "hello" and 0.6 s of quiet: its pause's interim comes
        interim = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps({"type": "Finalize"}))  # (a tentative turn end there)
        await ws.send(rest + bytes(16000))  # and 1 s more of quiet: the stand-in ends the rest itself
        finals = []
        while len(finals) < 2:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["is_final"]:
                finals.append(m["channel"]["alternatives"][0]["transcript"])
        await ws.close()
    assert (interim["is_final"], interim["channel"]["alternatives"][0]["transcript"]) == (False, "Hello,")
    assert finals == ["Hello,", "how are you?"]
    assert list(dg.transcripts) == ["next line"]


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
