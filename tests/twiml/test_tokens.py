"""Stream tokens and TwiML documents."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from twiml.responses import connect_stream, dial
from twiml.token_store import MemoryTokenStore, SqliteTokenStore
from twiml.tokens import StreamGrant, StreamTokens, TokenError


async def test_token_is_bound_single_use_and_expires():
    tokens = StreamTokens("secret", ttl_secs=1)
    t = tokens.issue("CA1", "AC1", {"workflow": "voicemail_drop", "message": "a.wav"})
    grant = await tokens.redeem(t)
    assert grant == StreamGrant("CA1", "AC1", {"workflow": "voicemail_drop", "message": "a.wav"})
    with pytest.raises(TokenError, match="already used"):
        await tokens.redeem(t)
    with pytest.raises(TokenError, match="unknown"):
        await StreamTokens("other-secret").redeem(tokens.issue("CA1"))
    # one character inside the signature changed (its last base64 character carries padding bits, so
    # changing that one could leave the decoded signature the same: a 1-in-1000 flake, seen in CI)
    tampered = t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:]
    with pytest.raises(TokenError, match="unknown"):
        await tokens.redeem(tampered)
    late = tokens.issue("CA2")
    time.sleep(2.1)
    with pytest.raises(TokenError, match="expired"):
        await tokens.redeem(late)


def test_grant_mismatch_names_what_differs():
    grant = StreamGrant("CA1", "AC1", {"workflow": "voicemail_drop", "message": "a.wav"})
    names = ("workflow", "message", "agent")
    same = {"workflow": "voicemail_drop", "message": "a.wav", "other": "ignored"}
    assert grant.mismatch("CA1", "AC1", same, names) == ""
    assert "callSid" in grant.mismatch("CA2", "AC1", same, names)
    assert "accountSid" in grant.mismatch("CA1", "AC2", same, names)
    assert "workflow" in grant.mismatch("CA1", "AC1", {**same, "workflow": "power_dial"}, names)
    assert "message" in grant.mismatch("CA1", "AC1", {"workflow": "voicemail_drop"}, names)
    assert "agent" in grant.mismatch("CA1", "AC1", {**same, "agent": "sales"}, names)


async def test_sqlite_store_remembers_used_tokens_across_instances(tmp_path):
    path = tmp_path / "used.sqlite3"
    first = StreamTokens("secret", ttl_secs=60, store=SqliteTokenStore(path))
    t = first.issue("CA1")
    assert (await first.redeem(t)).call_sid == "CA1"
    first.store.close()
    restarted = StreamTokens("secret", ttl_secs=60, store=SqliteTokenStore(path))  # a new process, same file
    with pytest.raises(TokenError, match="already used"):
        await restarted.redeem(t)
    assert (await restarted.redeem(first.issue("CA2"))).call_sid == "CA2"


async def test_concurrent_redeems_of_one_token_succeed_once(tmp_path):
    tokens = StreamTokens("secret", store=SqliteTokenStore(tmp_path / "used.sqlite3"))
    t = tokens.issue("CA1")
    results = await asyncio.gather(*[tokens.redeem(t) for _ in range(20)], return_exceptions=True)
    assert sum(isinstance(r, StreamGrant) for r in results) == 1
    assert sum(isinstance(r, TokenError) for r in results) == 19


async def test_memory_store_claims_once_until_expiry():
    store = MemoryTokenStore()
    assert await store.claim("n", time.time() + 60) and not await store.claim("n", time.time() + 60)
    assert await store.claim("old", time.time() - 1) and await store.claim("old", time.time() + 60)


def test_connect_stream_twiml():
    xml = connect_stream("wss://example.ngrok.app/ws/abc", {"workflow": "voicemail_drop", "message": "a.wav"})
    stream = ET.fromstring(xml).find("./Connect/Stream")
    assert stream.get("url") == "wss://example.ngrok.app/ws/abc"
    assert {p.get("name"): p.get("value") for p in stream} == {"workflow": "voicemail_drop", "message": "a.wav"}
    assert ET.fromstring(dial("+15551234567")).find("./Dial/Number").text == "+15551234567"
