"""A Twilio phone simulator: place calls against the server without a phone (see simulator/phone.py)."""

from simulator.phone import CallReport, PhoneCall, StreamClient, new_sid, simulate_call
from simulator.rest import RestStandIn
from simulator.serve import BackgroundServer

__all__ = [
    "BackgroundServer",
    "CallReport",
    "PhoneCall",
    "RestStandIn",
    "StreamClient",
    "new_sid",
    "simulate_call",
]
