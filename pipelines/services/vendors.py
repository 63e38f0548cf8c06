"""Pipecat's vendor services with the two limits the settings impose (nothing else is changed).

- TimedOpenAILLMService: the OpenAI client gets LLM_TIMEOUT_SECS and LLM_MAX_RETRIES (it retries 429, 5xx,
  timeouts and refused connections itself, honouring Retry-After).
- BoundedDeepgramSTTService: setting up no longer waits for Deepgram's handshake to succeed or give up
  (Pipecat retries a 5xx handshake with 4-10 s back-off, up to three times, before a call could start);
  after VENDOR_CONNECT_TIMEOUT_SECS the call goes on and Pipecat's reconnect loop keeps trying in the
  background, its errors counted by the failover switcher (resilience.py). It also sends Deepgram's
  `Finalize` on a FinalizeTranscriptFrame (the endpointer's tentative turn end, pushed upstream), which
  comes before the VAD's stop (Pipecat's only Finalize trigger): the final words arrive that much sooner.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.deepgram.stt import DeepgramSTTService, ListenV1Finalize
from pipecat.services.openai.llm import OpenAILLMService

from processors.frames import FinalizeTranscriptFrame

NO_KEY = "callgate-no-key"  # OpenAI-compatible local servers still want some key in the header


class TimedOpenAILLMService(OpenAILLMService):
    """OpenAILLMService whose client uses our timeout and retry count."""

    def __init__(self, *, timeout_secs: float, max_retries: int, **kwargs: Any) -> None:
        self._cg_timeout_secs = timeout_secs
        self._cg_max_retries = max_retries
        super().__init__(**kwargs)

    def create_client(self, api_key=None, base_url=None, organization=None, project=None, default_headers=None, **kwargs):
        client = super().create_client(
            api_key=api_key, base_url=base_url, organization=organization, project=project,
            default_headers=default_headers, **kwargs,
        )
        return client.with_options(timeout=self._cg_timeout_secs, max_retries=self._cg_max_retries)


class BoundedDeepgramSTTService(DeepgramSTTService):
    """DeepgramSTTService whose (re)connect waits at most `connect_wait_secs` for the handshake."""

    def __init__(self, *, connect_wait_secs: float = 2.0, **kwargs: Any) -> None:
        self._cg_connect_wait_secs = connect_wait_secs
        super().__init__(**kwargs)

    async def _connect(self):
        try:
            await asyncio.wait_for(super()._connect(), timeout=self._cg_connect_wait_secs)
        except TimeoutError:
            logger.warning(f"{self}: not connected after {self._cg_connect_wait_secs:.1f} s; retrying in the background")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, FinalizeTranscriptFrame) and self._connection:
            # A Finalize with nothing new to finalize only brings back an empty from_finalize result, so the
            # VAD stop's own Finalize after this one costs nothing.
            self.request_finalize()
            try:
                await self._connection.send_finalize(ListenV1Finalize(type="Finalize"))
            except Exception as e:  # a dropped connection: the reconnect loop deals with it
                logger.warning(f"{self}: Finalize failed: {e}")
