"""TwiML documents the server returns, built with twilio's VoiceResponse (never by string pasting)."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


def connect_stream(stream_url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream url=...>` with one `<Parameter>` per workflow option (no query strings: 31920)."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def dial(number: str, caller_id: str | None = None) -> str:
    """Bridge the live call to a number: used to hand a human over to a rep."""
    response = VoiceResponse()
    d = Dial(caller_id=caller_id) if caller_id else Dial()
    d.number(number)
    response.append(d)
    return str(response)


def say_and_hangup(text: str) -> str:
    """A polite goodbye when no one is available to take a human."""
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def redirect(url: str) -> str:
    """Send the call's TwiML request elsewhere (a draining server hands new calls to another instance)."""
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)
