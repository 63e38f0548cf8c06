"""build_agent_services: the STT, LLM and TTS for one agent call, chosen by which keys are set.

    DEEPGRAM_API_KEY  -> DeepgramSTTService (8 kHz linear16, interim results)   else pocketsphinx
    OPENAI_API_KEY or OPENAI_BASE_URL -> OpenAILLMService (streaming)           else the scripted dialog
    CARTESIA_API_KEY  -> CartesiaTTSService (8 kHz pcm_s16le, word timestamps)   else the offline voice

With VENDOR_FALLBACK (default on) each vendor service comes wrapped with its stand-by (resilience.py).
Every call gets fresh service objects; only the loopback chat servers are shared by the process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transcriptions.language import Language

from callgate.audio import SAMPLE_RATE
from callgate.settings import Settings
from pipelines.agent_spec import AgentSpec
from pipelines.services.chat_server import farewell_server, offline_dialog_server
from pipelines.services.offline_stt import PocketsphinxSTTService
from pipelines.services.offline_tts import LocalTTSService, LocalVoice
from pipelines.services.resilience import FailoverLLMSwitcher, FailoverSwitcher, VendorHealth
from pipelines.services.sphinx import shared_pool
from pipelines.services.vendors import NO_KEY, BoundedDeepgramSTTService, TimedOpenAILLMService


@dataclass
class AgentServices:
    """The three Pipecat processors of an agent call, what backs each, and the call's vendor health."""

    stt: FrameProcessor
    llm: FrameProcessor  # an LLMService or an LLMSwitcher: both have register_function()
    tts: FrameProcessor
    kinds: dict[str, str] = field(default_factory=dict)  # role -> "deepgram" | "pocketsphinx" | ...
    health: VendorHealth = field(default_factory=VendorHealth)
    # segments the offline STT is still decoding: its words come only when a decode ends, which on a
    # loaded CPU can be seconds after the caller stopped, and the turn must wait for them
    stt_in_flight: Callable[[], int] = lambda: 0


def _language(code: str) -> Language | str:
    try:
        return Language(code)
    except ValueError:
        return code


def offline_voice(settings: Settings) -> LocalVoice:
    return LocalVoice(engine=settings.offline_tts_engine, voice=settings.offline_tts_voice)


def _llm(settings: Settings, agent: AgentSpec, base_url: str | None, api_key: str | None) -> OpenAILLMService:
    return TimedOpenAILLMService(
        api_key=api_key or NO_KEY,
        base_url=base_url,
        timeout_secs=settings.llm_timeout_secs,
        max_retries=settings.llm_max_retries,
        settings=OpenAILLMService.Settings(
            model=agent.llm_model or settings.openai_model,
            temperature=agent.temperature,
            system_instruction=agent.system_prompt,
        ),
    )


def build_agent_services(
    settings: Settings,
    agent: AgentSpec,
    *,
    health: VendorHealth | None = None,
    tts_kwargs: dict[str, Any] | None = None,
) -> AgentServices:
    """Fresh STT, LLM and TTS processors for one call of `agent` (see the module docstring).

    `tts_kwargs` go to whichever TTS service is built (e.g. text_aggregation_mode). The LLM carries
    `agent.system_prompt` as its system instruction, so the LLMContext holds no system message.
    """
    health = health or VendorHealth()
    tts_kwargs = dict(tts_kwargs or {})
    kinds: dict[str, str] = {}
    fallback = settings.vendor_fallback

    offline_stt = PocketsphinxSTTService(pool=shared_pool(settings.offline_stt_workers))
    if settings.deepgram_api_key:
        deepgram = BoundedDeepgramSTTService(
            connect_wait_secs=settings.vendor_connect_timeout_secs,
            api_key=settings.deepgram_api_key,
            base_url=settings.deepgram_base_url,
            encoding="linear16",
            sample_rate=SAMPLE_RATE,
            settings=BoundedDeepgramSTTService.Settings(
                model=settings.deepgram_model,
                language=_language(agent.language),
                interim_results=True,
                endpointing=settings.deepgram_endpointing_ms,
            ),
        )
        kinds["stt"] = "deepgram"
        stt: FrameProcessor = (
            FailoverSwitcher(
                [deepgram, offline_stt], role="stt", health=health,
                threshold=settings.stt_errors_before_fallback, timeout_secs=settings.stt_timeout_secs,
            )
            if fallback
            else deepgram
        )
    else:
        stt, kinds["stt"] = offline_stt, "pocketsphinx"

    if settings.openai_api_key or settings.openai_base_url:
        vendor_llm = _llm(settings, agent, settings.openai_base_url, settings.openai_api_key)
        kinds["llm"] = "openai"
        if fallback:
            fs = farewell_server(settings.vendor_failure_message)
            farewell = _llm(settings, agent, fs.base_url, fs.api_key)
            llm: FrameProcessor = FailoverLLMSwitcher(
                [vendor_llm, farewell], health=health, threshold=settings.llm_errors_before_fallback
            )
        else:
            llm = vendor_llm
    else:
        dialog = offline_dialog_server()
        llm, kinds["llm"] = _llm(settings, agent, dialog.base_url, dialog.api_key), "scripted"

    if settings.cartesia_api_key:
        cartesia = CartesiaTTSService(
            api_key=settings.cartesia_api_key,
            url=settings.cartesia_url,
            sample_rate=SAMPLE_RATE,
            encoding="pcm_s16le",
            settings=CartesiaTTSService.Settings(
                voice=agent.voice or settings.cartesia_voice,
                model=settings.cartesia_model,
                language=_language(agent.language),
            ),
            **tts_kwargs,
        )
        kinds["tts"] = "cartesia"
        tts: FrameProcessor = (
            FailoverSwitcher(
                [cartesia, LocalTTSService(voice=offline_voice(settings), **tts_kwargs)], role="tts",
                health=health, threshold=settings.tts_errors_before_fallback, timeout_secs=settings.tts_timeout_secs,
            )
            if fallback
            else cartesia
        )
    else:
        tts, kinds["tts"] = LocalTTSService(voice=offline_voice(settings), **tts_kwargs), "offline"

    return AgentServices(
        stt=stt, llm=llm, tts=tts, kinds=kinds, health=health, stt_in_flight=lambda: offline_stt.in_flight
    )
