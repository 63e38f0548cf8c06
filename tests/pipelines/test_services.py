"""The agent services: what the factory builds, the offline default, and calls that survive vendor faults.

The vendor cases run Pipecat's real DeepgramSTTService, OpenAILLMService and CartesiaTTSService against
the stand-ins in simulator/vendors over loopback sockets; the call is tests/pipelines/agent_call.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pipecat.pipeline.service_switcher import ServiceSwitcher
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService

from callgate.settings import Settings
from pipelines.agent_spec import AgentSpec
from pipelines.services import build_agent_services
from pipelines.services.offline_stt import PocketsphinxSTTService
from pipelines.services.offline_tts import LocalTTSService, LocalVoice
from pipelines.services.sphinx import PocketsphinxRecognizer
from simulator.vendors import Reply, vendor_stand_ins
from tests.pipelines.agent_call import CALLER_LINES, caller_pcm, run_call

REPO = Path(__file__).resolve().parents[2]
FAST = dict(
    llm_timeout_secs=1.5, llm_max_retries=1, stt_timeout_secs=1.0, tts_timeout_secs=1.0,
    vendor_connect_timeout_secs=1.0,
)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **{**FAST, **kw})


# --- the factory ---------------------------------------------------------------------------------


def test_no_keys_gives_the_offline_services():
    svc = build_agent_services(settings(), AgentSpec())
    assert svc.kinds == {"stt": "pocketsphinx", "llm": "scripted", "tts": "offline"}
    assert isinstance(svc.stt, PocketsphinxSTTService)
    assert isinstance(svc.llm, OpenAILLMService)  # the real client, pointed at the loopback dialog server
    assert isinstance(svc.tts, LocalTTSService)


def test_keys_give_the_vendor_services_at_8khz_with_stand_bys():
    s = settings(deepgram_api_key="d", openai_api_key="o", cartesia_api_key="c", deepgram_base_url="ws://127.0.0.1:9")
    svc = build_agent_services(s, AgentSpec(voice="voice-123", llm_model="gpt-x", temperature=0.3))
    assert svc.kinds == {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
    for p in (svc.stt, svc.llm, svc.tts):
        assert isinstance(p, ServiceSwitcher)
    dg, _ = svc.stt.services
    assert isinstance(dg, DeepgramSTTService)
    assert dg._build_connect_kwargs()["encoding"] == "linear16"
    assert dg._settings.interim_results is True
    ct, local = svc.tts.services
    assert isinstance(ct, CartesiaTTSService) and isinstance(local, LocalTTSService)
    assert ct._output_encoding == "pcm_s16le" and ct._settings.voice == "voice-123"
    llm, farewell = svc.llm.services
    assert llm._settings.model == "gpt-x" and llm._settings.temperature == 0.3


def test_without_fallback_the_vendor_services_are_bare():
    s = settings(deepgram_api_key="d", openai_base_url="http://127.0.0.1:9/v1", cartesia_api_key="c", vendor_fallback=False)
    svc = build_agent_services(s, AgentSpec())
    assert isinstance(svc.stt, DeepgramSTTService)
    assert isinstance(svc.llm, OpenAILLMService) and not isinstance(svc.llm, ServiceSwitcher)
    assert isinstance(svc.tts, CartesiaTTSService)


# --- the offline default -------------------------------------------------------------------------


def test_offline_voice_word_times_are_ordered_and_inside_the_audio():
    s = LocalVoice(voice="rms").synthesize("Hello there, would Tuesday morning work for you?")
    times = [t for _, t in s.words]
    assert [w for w, _ in s.words] == "Hello there, would Tuesday morning work for you?".split()
    assert times == sorted(times) and times[0] >= 0 and times[-1] < s.duration_secs
    assert s.duration_secs > 1.5


def test_offline_recognizer_understands_a_clear_caller():
    text = PocketsphinxRecognizer().transcribe(caller_pcm("no thank you goodbye"))
    assert "goodbye" in text


async def test_offline_call_converses_and_ends_on_goodbye():
    r = await run_call(build_agent_services(settings(), AgentSpec()))
    assert not r.cancelled and r.escaped_errors == []
    assert r.transcripts[0] == "yes i can talk now" and "goodbye" in r.transcripts[-1]
    assert "Which day works best for you?" in " ".join(r.bot_words)
    assert r.ended_by == [{"reason": "caller said goodbye"}]
    assert r.bot_audio_secs > 5


def test_offline_services_run_with_no_network_beyond_loopback(tmp_path: Path):
    """In a child process whose sockets refuse anything but loopback, with an empty HOME: nothing downloads."""
    script = textwrap.dedent(
        """
        import asyncio, json, socket, sys
        attempts = []
        LOOPBACK = {"127.0.0.1", "::1", "localhost"}
        real_connect, real_connect_ex, real_gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
        def host_of(addr):
            return addr[0] if isinstance(addr, tuple) else str(addr)
        def connect(self, addr):
            if self.family in (socket.AF_INET, socket.AF_INET6) and host_of(addr) not in LOOPBACK:
                attempts.append(str(addr)); raise OSError("network blocked")
            return real_connect(self, addr)
        def connect_ex(self, addr):
            if self.family in (socket.AF_INET, socket.AF_INET6) and host_of(addr) not in LOOPBACK:
                attempts.append(str(addr)); return 111
            return real_connect_ex(self, addr)
        def getaddrinfo(host, *a, **k):
            if host not in LOOPBACK and host is not None:
                attempts.append("dns:" + str(host)); raise socket.gaierror("network blocked")
            return real_gai(host, *a, **k)
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
        from loguru import logger; logger.remove()
        from callgate.settings import Settings
        from pipelines.agent_spec import AgentSpec
        from pipelines.services import build_agent_services
        from tests.pipelines.agent_call import run_call
        r = asyncio.run(run_call(build_agent_services(Settings(_env_file=None), AgentSpec())))
        print(json.dumps({"attempts": attempts, "transcripts": r.transcripts, "ended_by": r.ended_by,
                          "audio": r.bot_audio_secs}))
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(home / ".cache"))
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    assert "goodbye" in out["transcripts"][-1] and out["ended_by"] and out["audio"] > 5
    assert [p for p in home.rglob("*") if p.is_file()] == []  # no model, voice or cache written


# --- vendor faults -------------------------------------------------------------------------------

FAULTS = ["refused", "close", "429", "500", "timeout"]
_STAND_IN_FAULT = {"close": "close", "429": "429", "500": "500", "timeout": "hang"}


@contextmanager
def vendors(stt_fault: str | None = None, llm_fault: str | None = None, tts_fault: str | None = None) -> Iterator[Settings]:
    """The three stand-ins (one of them failing on every connection or request) and Settings for them."""
    llm: dict = {"refuse": llm_fault == "refused"}
    if llm_fault not in (None, "refused"):
        llm.update(default=Reply(text="Sure, let me check that for you.", fault=_STAND_IN_FAULT[llm_fault]), hang_secs=5)
    with vendor_stand_ins(
        transcripts=list(CALLER_LINES),
        deepgram={"refuse": stt_fault == "refused", "default_fault": _STAND_IN_FAULT.get(stt_fault or ""),
                  "close_after_secs": 0.5},
        openai=llm,
        cartesia={"refuse": tts_fault == "refused", "default_fault": _STAND_IN_FAULT.get(tts_fault or "")},
    ) as suite:
        yield suite.settings(settings())


async def test_healthy_vendors_converse_with_no_trouble_counted():
    with vendors() as s:
        svc = build_agent_services(s, AgentSpec())
        r = await run_call(svc)
    assert r.transcripts == CALLER_LINES  # Deepgram's stand-in was told what the caller says
    assert r.ended_by == [{"reason": "caller said goodbye"}]
    assert r.counters == {} and r.vendor_events == [] and r.escaped_errors == [] and not r.cancelled


def fell_back_event(r, role: str) -> bool:
    """The fallback reached the end of the pipeline as a public `vendor_fault` event, with the counters."""
    ev = [e for e in r.vendor_events if e["role"] == role and e["kind"] == "fallbacks"]
    return len(ev) == 1 and ev[0]["event"] == "vendor_fault" and ev[0]["counters"][f"{role}_fallbacks"] == 1


@pytest.mark.parametrize("fault", FAULTS)
async def test_stt_fault_falls_back_to_offline_and_the_call_goes_on(fault: str):
    with vendors(stt_fault=fault) as s:
        r = await run_call(build_agent_services(s, AgentSpec()))
    assert not r.cancelled and r.escaped_errors == []
    assert r.counters["stt_fallbacks"] == 1 and r.counters["stt_errors"] >= 1
    assert r.active["stt"].startswith("PocketsphinxSTTService")
    assert fell_back_event(r, "stt")
    assert "goodbye" in r.transcripts[-1]  # the stand-by still hears the caller
    assert r.ended_by == [{"reason": "caller said goodbye"}]  # and the call ends the normal, polite way


@pytest.mark.parametrize("fault", FAULTS)
async def test_llm_fault_tells_the_caller_and_ends_the_call(fault: str):
    with vendors(llm_fault=fault) as s:
        r = await run_call(build_agent_services(s, AgentSpec()))
    assert not r.cancelled and r.escaped_errors == []
    assert r.counters["llm_fallbacks"] == 1 and r.counters["llm_rerun_turns"] == 1
    assert fell_back_event(r, "llm")
    assert "technical trouble" in " ".join(r.bot_words)  # the caller is told, in the call's voice
    assert r.ended_by == [{"reason": "vendor_failure"}]
    assert len(r.transcripts) == 1  # ended after the first turn, not left waiting


@pytest.mark.parametrize("fault", FAULTS)
async def test_tts_fault_falls_back_to_the_offline_voice(fault: str):
    with vendors(tts_fault=fault) as s:
        r = await run_call(build_agent_services(s, AgentSpec()))
    assert not r.cancelled and r.escaped_errors == []
    assert r.counters["tts_fallbacks"] == 1 and r.counters["tts_errors"] >= 1
    assert r.active["tts"].startswith("LocalTTSService")
    assert fell_back_event(r, "tts")
    assert "Which day works best for you?" in " ".join(r.bot_words)
    assert r.bot_audio_secs > 5
    assert r.ended_by == [{"reason": "caller said goodbye"}]


async def test_one_calls_vendor_failure_leaves_another_call_alone():
    with vendors(stt_fault="500") as bad, vendors() as good:
        # the healthy call keeps the shipped timeouts: the test's short ones could count a slow answer on a
        # loaded machine as the healthy vendor's fault, which is not what this test is about
        good = good.model_copy(update={k: Settings.model_fields[k].default for k in FAST})
        a, b = await asyncio.gather(
            run_call(build_agent_services(bad, AgentSpec())), run_call(build_agent_services(good, AgentSpec()))
        )
    assert a.counters["stt_fallbacks"] == 1 and a.ended_by
    assert b.counters == {} and b.transcripts == CALLER_LINES and b.ended_by == [{"reason": "caller said goodbye"}]
    assert b.active["stt"].startswith("BoundedDeepgramSTTService")


async def test_a_slow_llm_is_not_counted_against_the_tts():
    """Waiting for the LLM's next sentence is not a TTS timeout: only text already sent owes audio."""
    with vendor_stand_ins(transcripts=list(CALLER_LINES), openai={"first_token_ms": 1500, "token_interval_ms": 120}) as v:
        r = await run_call(build_agent_services(v.settings(settings(llm_timeout_secs=5.0)), AgentSpec()))
    assert r.counters == {} and r.ended_by == [{"reason": "caller said goodbye"}]


async def test_deepgram_finalizes_on_the_endpointers_request_before_any_vad_stop():
    """A FinalizeTranscriptFrame (the endpointer's tentative end, pushed upstream) makes the Deepgram service
    send `Finalize` at once: the final words come back without waiting for the VAD's stop (none is sent
    here) or Deepgram's own endpointing (5 s on this stand-in)."""
    from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame
    from pipecat.tests.utils import SleepFrame, run_test

    from pipelines.services.vendors import BoundedDeepgramSTTService
    from processors.frames import FinalizeTranscriptFrame
    from simulator.vendors import DeepgramStandIn

    pcm = caller_pcm("hello there") + bytes(8000)  # and half a second of quiet
    audio = [InputAudioRawFrame(pcm[i : i + 320], 8000, 1) for i in range(0, len(pcm), 320)]
    with DeepgramStandIn(transcripts=["hello there"], endpoint_ms=5000, final_ms=50) as dg:
        stt = BoundedDeepgramSTTService(api_key="k", base_url=dg.base_url, sample_rate=8000, encoding="linear16")
        down, _ = await run_test(
            stt, frames_to_send=[SleepFrame(0.3), *audio, SleepFrame(0.3), FinalizeTranscriptFrame(t_ms=3000.0),
                                 SleepFrame(0.5)], start_timeout=5,
        )
    assert dg.control_messages[0] == "Finalize"
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == ["hello there"]
    assert dg.results[-1]["from_finalize"] is True
