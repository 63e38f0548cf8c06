"""Local stand-ins for the paid vendors, speaking their real wire protocols over real loopback sockets.

DeepgramStandIn (listen WebSocket), OpenAIStandIn (chat completions, SSE) and CartesiaStandIn (TTS
WebSocket), each with configurable latency and faults, so tests exercise Pipecat's real services.
"""

from simulator.vendors.cartesia import CartesiaStandIn
from simulator.vendors.deepgram import DeepgramStandIn
from simulator.vendors.openai import OpenAIStandIn, Reply, ToolCall
from simulator.vendors.suite import PUBLISHED_MEDIANS, VendorSuite, vendor_settings, vendor_stand_ins

__all__ = [
    "PUBLISHED_MEDIANS",
    "CartesiaStandIn",
    "DeepgramStandIn",
    "OpenAIStandIn",
    "Reply",
    "ToolCall",
    "VendorSuite",
    "vendor_settings",
    "vendor_stand_ins",
]
