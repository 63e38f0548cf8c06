"""All three vendor stand-ins at once, and the Settings that point a server or a call at them.

    with vendor_stand_ins(transcripts=["yes", "goodbye"], latency=PUBLISHED_MEDIANS) as v:
        settings = v.settings(base_settings)          # DEEPGRAM/OPENAI/CARTESIA keys and URLs set
        v.deepgram.say("one more line")               # what the caller says next

PUBLISHED_MEDIANS are the vendor medians the latency benchmark uses (issue 8): Deepgram streaming final
about 150 ms after the end of speech, OpenAI first token about 350 ms, Cartesia first audio byte about
100 ms. The stand-ins add exactly these; the network adds nothing on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from callgate.settings import Settings
from simulator.vendors.cartesia import CartesiaStandIn
from simulator.vendors.deepgram import DeepgramStandIn
from simulator.vendors.openai import OpenAIStandIn

ZERO_LATENCY: dict[str, float] = {"deepgram_final_ms": 0.0, "openai_first_token_ms": 0.0, "cartesia_first_audio_ms": 0.0}
PUBLISHED_MEDIANS: dict[str, float] = {
    "deepgram_final_ms": 150.0,
    "openai_first_token_ms": 350.0,
    "cartesia_first_audio_ms": 100.0,
}


def vendor_settings(deepgram: DeepgramStandIn, openai: OpenAIStandIn, cartesia: CartesiaStandIn) -> dict[str, Any]:
    """The Settings fields that make a server use these stand-ins: the three vendors' keys and URLs."""
    return {
        "deepgram_api_key": "stand-in", "deepgram_base_url": deepgram.base_url,
        "openai_api_key": "stand-in", "openai_base_url": openai.base_url,
        "cartesia_api_key": "stand-in", "cartesia_url": cartesia.url,
    }


@dataclass
class VendorSuite:
    """The running stand-ins."""

    deepgram: DeepgramStandIn
    openai: OpenAIStandIn
    cartesia: CartesiaStandIn

    def settings(self, base: Settings | None = None, **overrides: Any) -> Settings:
        """`base` (or a fresh Settings) with the three vendors' keys and URLs pointing at the stand-ins."""
        values = {**vendor_settings(self.deepgram, self.openai, self.cartesia), **overrides}
        return base.model_copy(update=values) if base is not None else Settings(_env_file=None, **values)


@contextmanager
def vendor_stand_ins(
    *,
    transcripts: list[str] | None = None,
    latency: dict[str, float] | None = None,
    deepgram: dict[str, Any] | None = None,
    openai: dict[str, Any] | None = None,
    cartesia: dict[str, Any] | None = None,
) -> Iterator[VendorSuite]:
    """Start the three stand-ins (extra constructor arguments per vendor), stop them on exit."""
    lat = {**ZERO_LATENCY, **(latency or {})}
    with ExitStack() as stack:
        dg = DeepgramStandIn(
            transcripts=transcripts, **{"final_ms": lat["deepgram_final_ms"], **(deepgram or {})}
        ).start()
        stack.callback(dg.stop)
        oai = stack.enter_context(
            OpenAIStandIn(**{"first_token_ms": lat["openai_first_token_ms"], **(openai or {})})
        )
        ct = CartesiaStandIn(**{"first_audio_ms": lat["cartesia_first_audio_ms"], **(cartesia or {})}).start()
        stack.callback(ct.stop)
        yield VendorSuite(deepgram=dg, openai=oai, cartesia=ct)
