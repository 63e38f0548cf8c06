"""Stream tokens and TwiML documents."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from twiml.responses import connect_stream, dial
from twiml.tokens import StreamTokens, TokenError


def test_token_is_bound_single_use_and_expires():
    tokens = StreamTokens("secret", ttl_secs=1)
    t = tokens.issue("CA1")
    assert tokens.redeem(t) == "CA1"
    with pytest.raises(TokenError, match="already used"):
        tokens.redeem(t)
    with pytest.raises(TokenError, match="unknown"):
        StreamTokens("other-secret").redeem(tokens.issue("CA1"))
    with pytest.raises(TokenError, match="unknown"):
        tokens.redeem(t[:-2] + "xx")
    late = tokens.issue("CA2")
    time.sleep(2.1)
    with pytest.raises(TokenError, match="expired"):
        tokens.redeem(late)


def test_connect_stream_twiml():
    xml = connect_stream("wss://example.ngrok.app/ws/abc", {"workflow": "voicemail_drop", "message": "a.wav"})
    stream = ET.fromstring(xml).find("./Connect/Stream")
    assert stream.get("url") == "wss://example.ngrok.app/ws/abc"
    assert {p.get("name"): p.get("value") for p in stream} == {"workflow": "voicemail_drop", "message": "a.wav"}
    assert ET.fromstring(dial("+15551234567")).find("./Dial/Number").text == "+15551234567"
