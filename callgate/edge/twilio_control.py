"""Twilio's REST API for a live call: the client (its base URL can be the simulator) and the control a
workflow is given to redirect its call. Its own module so the stream handler and POST /calls share one
client factory, and the routes need not know how a call is redirected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from callgate.settings import Settings
from pipelines.actions import CallGoneError
from processors.twilio_ingest import TwilioIngestSerializer

CALL_NOT_IN_PROGRESS = 21220  # Twilio REST error: "Call is not in-progress. Cannot redirect."


class TwilioCallControl:
    """Acts on a live call through Twilio's REST API (the configured base URL)."""

    def __init__(self, settings: Settings, call_sid: str, on_error: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.call_sid = call_sid
        self.serializer: TwilioIngestSerializer | None = None
        self._on_error = on_error or (lambda: None)

    async def redirect(self, twiml: str) -> bool:
        if not (self.settings.twilio_account_sid and self.settings.twilio_auth_token):
            logger.warning(f"{self.call_sid}: dev mode, cannot update the call with new TwiML")
            return False
        if self.serializer:
            self.serializer.hand_off()  # before the EndFrame can reach it
        client = twilio_client(self.settings)
        try:
            await asyncio.wait_for(
                client.calls(self.call_sid).update_async(twiml=twiml),
                timeout=self.settings.twilio_api_timeout_secs + 1,
            )
            return True
        except TwilioRestException as e:
            if e.code == CALL_NOT_IN_PROGRESS:
                logger.info(f"{self.call_sid}: the call ended before the update reached Twilio")
                raise CallGoneError(e.msg) from e
            logger.error(f"{self.call_sid}: Twilio refused the call update: {e.msg}")
            self._on_error()
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.error(f"{self.call_sid}: could not reach Twilio's REST API: {e}")
            self._on_error()
            return False
        finally:
            await client.http_client.close()


def twilio_client(settings: Settings) -> TwilioClient:
    """An async Twilio REST client whose base URL can point at a stand-in (the simulator)."""
    client = TwilioClient(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=AsyncTwilioHttpClient(timeout=settings.twilio_api_timeout_secs),
    )
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client
