"""Stream-token binding over real sockets against real servers in secure mode: `start` must match the
CallSid, AccountSid and options the webhook chose, and a used token stays used in another server process
sharing the token store (a restart, or a second worker)."""

from __future__ import annotations

import json

import httpx

from tests.server.conftest import ACCOUNT_SID, wait_until
from tests.server.test_security import (
    CALL_SID,
    expect_403,
    expect_close,
    open_stream,
    signed_webhook,
    start_msg,
    stream_url_from,
    webhook_params,
)


async def test_start_must_match_everything_the_webhook_chose(server_factory, tmp_path):
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "promo.wav").write_bytes(b"RIFF")
    server = server_factory()
    tampered = [
        lambda p: {**p, "workflow": "power_dial"},
        lambda p: {**p, "message": "other.wav"},
        lambda p: {k: v for k, v in p.items() if k != "message"},
        lambda p: {**p, "agent": "sales"},
    ]
    reasons = []
    for tamper in tampered:
        url, params = stream_url_from(signed_webhook(server, webhook_params(), query="message=promo.wav").text)
        assert params == {"workflow": "voicemail_drop", "message": "promo.wav"}
        ws = await open_stream(url)
        await ws.send(start_msg(CALL_SID, tamper(params)))
        reasons.append(await expect_close(ws))
    # another account's start
    url, params = stream_url_from(signed_webhook(server, webhook_params()).text)
    ws = await open_stream(url)
    msg = json.loads(start_msg(CALL_SID, params))
    msg["start"]["accountSid"] = "AC" + "9" * 32
    await ws.send(json.dumps(msg))
    reasons.append(await expect_close(ws))
    assert [r.split(" ")[1] for r in reasons[:4]] == ["'workflow'", "'message'", "'message'", "'agent'"], reasons
    assert "accountSid" in reasons[4]
    # a webhook signed for this server but carrying another AccountSid
    other = signed_webhook(server, {**webhook_params(), "AccountSid": "AC" + "8" * 32})
    assert other.status_code == 403
    assert server.state.rejected == {"start_mismatch": 5, "account_mismatch": 1}
    assert not server.state.active and not server.state.finished  # no pipeline for any of them


async def test_a_used_token_stays_used_in_another_server_sharing_the_store(server_factory, tmp_path):
    store = tmp_path / "shared-used-tokens.sqlite3"
    first = server_factory(token_store_path=store)
    url, params = stream_url_from(signed_webhook(first, webhook_params()).text)
    ws = await open_stream(url)
    await ws.send(start_msg(CALL_SID, params))
    await ws.send(json.dumps({"event": "stop", "stop": {"callSid": CALL_SID, "accountSid": ACCOUNT_SID}}))
    await expect_close(ws, code=1000)
    await wait_until(lambda: CALL_SID in first.state.finished, what="the call to finish")

    token = url.rsplit("/", 1)[1]
    # The same token (same secret) presented to a second server process on the same store: refused.
    second = server_factory(token_store_path=store)
    await expect_403(f"{second.settings.stream_base_url}/ws/{token}")
    assert second.state.rejected == {"token": 1}
    # The control: a server that remembers tokens only in memory would have taken it.
    forgetful = server_factory(token_store_path=None)
    ws = await open_stream(f"{forgetful.settings.stream_base_url}/ws/{token}")
    await ws.close()
    assert "token" not in forgetful.state.rejected
    assert httpx.get(f"{second.base_url}/healthz").json() == {"status": "ok"}
