"""What a workflow can do to the live call besides playing audio: hand it over with new TwiML, and
report AMD verdicts to the dialer. The server implements these with Twilio's REST API; replay records them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httpx
from loguru import logger

from callgate.settings import Settings
from twiml.responses import dial, say_and_hangup


class CallGoneError(Exception):
    """Twilio says the call is no longer in progress (the caller hung up before the action reached it)."""


class CallControl(Protocol):
    """The handle a workflow uses to act on its call outside the media stream."""

    async def redirect(self, twiml: str) -> bool:
        """Replace the call's TwiML (Twilio then ends the stream). True when Twilio took it; raises
        CallGoneError when the call had already ended."""
        ...


class RecordingCallControl:
    """For replay and tests: remembers what would have been sent."""

    def __init__(self) -> None:
        self.redirects: list[str] = []

    async def redirect(self, twiml: str) -> bool:
        self.redirects.append(twiml)
        return True


def human_twiml(settings: Settings) -> tuple[str, str]:
    """The configured human action: (`connect` with <Dial>, or `goodbye` with <Say><Hangup>), and its TwiML."""
    if settings.connect_number:
        return "connect", dial(settings.connect_number, caller_id=settings.twilio_from_number)
    return "goodbye", say_and_hangup(settings.human_goodbye)


_background: set[asyncio.Task] = set()


def send_verdict(url: str, payload: dict[str, Any]) -> None:
    """Fire the callback without waiting on it; it outlives the call's pipeline (a hand-off ends it at once)."""
    task = asyncio.get_running_loop().create_task(post_verdict(url, payload))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def post_verdict(url: str, payload: dict[str, Any]) -> None:
    """POST a verdict to the dialer's callback; failures are logged, never raised into the call."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(url, json=payload)
        if response.status_code >= 400:
            logger.warning(f"AMD callback {url} answered {response.status_code}")
    except httpx.HTTPError as e:
        logger.warning(f"AMD callback {url} failed: {e}")
