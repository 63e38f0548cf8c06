"""The control API over real sockets against a real server in secure mode: keys, rate limits, allow-list,
option validation, timeouts; each refusal is checked together with its counter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from callgate.edge.http_limits import uvicorn_options
from callgate.settings import Settings
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, API_KEY, AUTH, AUTH_TOKEN, free_port, make_settings
from tests.server.test_security import signed_webhook, webhook_params

TO = "+12025550123"


def test_every_control_route_needs_a_valid_key_and_healthz_says_only_ok(server_factory):
    server = server_factory()
    routes = [("POST", "/calls"), ("GET", "/calls/CA123"), ("GET", "/stats"), ("GET", "/docs"), ("GET", "/openapi.json")]
    refused = 0
    with httpx.Client(base_url=server.base_url) as client:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {API_KEY}"}):
                r = client.request(method, path, headers=headers, json={"to": TO})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                refused += 1
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/calls/CA123", headers=AUTH).status_code == 404
        assert client.get("/docs", headers=AUTH).status_code == 200
        schema = client.get("/openapi.json", headers=AUTH).json()
        assert "CallgateApiKey" in schema["components"]["securitySchemes"]
        assert client.get("/stats", headers=AUTH).json()["rejected"]["api_key"] == refused
    assert server.state.rejected == {"api_key": refused}


def test_secure_mode_without_keys_refuses_the_control_api(server_factory):
    server = server_factory(api_keys="")
    r = httpx.post(f"{server.base_url}/calls", json={"to": TO}, headers=AUTH)
    assert r.status_code == 503 and "CALLGATE_API_KEYS" in r.json()["detail"]
    assert httpx.get(f"{server.base_url}/docs").status_code == 503
    assert server.state.rejected == {"api_disabled": 2}


def test_dev_mode_without_keys_is_open_but_refuses_to_bind_a_public_host(server_factory):
    server = server_factory(twilio_auth_token=None, api_keys="")
    assert httpx.get(f"{server.base_url}/stats").status_code == 200
    env = {"PATH": "/usr/bin:/bin", "TWILIO_AUTH_TOKEN": "", "HOME": "/tmp"}
    cli = "import sys; from callgate.cli import main; sys.exit(main())"  # what the `callgate` script runs
    done = subprocess.run(
        [sys.executable, "-c", cli, "serve", "--host", "0.0.0.0", "--port", "9"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "ALLOW_DEV_MODE_PUBLIC" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


async def test_rate_limit_is_per_key(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(
            twilio_api_base_url=rest.base_url, twilio_from_number="+12025550100",
            api_keys=f"{API_KEY},second-key-abcdefabcdef", place_call_rate_limit="2/minute",
        )
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            codes = [(await client.post("/calls", json={"to": TO}, headers=AUTH)).status_code for _ in range(3)]
            over = await client.post("/calls", json={"to": TO}, headers=AUTH)
            other = await client.post(
                "/calls", json={"to": TO}, headers={"Authorization": "Bearer second-key-abcdefabcdef"}
            )
    assert codes == [201, 201, 429] and over.status_code == 429 and int(over.headers["retry-after"]) >= 1
    assert other.status_code == 201
    assert len(rest.calls_created) == 3
    assert server.state.rejected == {"rate_limited": 2}


async def test_destinations_outside_the_allow_list_or_premium_are_refused(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, twilio_from_number="+12025550100")
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
            refused = {
                n: await client.post("/calls", json={"to": n})
                for n in ("+19005550123", "+18765550123", "+15551234567", "+447911123456", "+882345678901")
            }
            ok = await client.post("/calls", json={"to": TO})
    details = {n: r.json()["detail"] for n, r in refused.items()}
    assert all(r.status_code == 403 for r in refused.values()), details
    assert "premium_rate" in details["+19005550123"]
    assert "JM" in details["+18765550123"]  # NANP, but Jamaica: not in the default US,CA
    assert "valid" in details["+15551234567"]
    assert ok.status_code == 201
    assert [c["To"] for c in rest.calls_created] == [TO]
    assert server.state.rejected == {"destination": 5}


async def test_message_and_agent_are_validated_before_anything_is_placed(server_factory, tmp_path):
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "promo.wav").write_bytes(b"RIFF")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "sales.yaml").write_text("name: sales\n")
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(
            twilio_api_base_url=rest.base_url, twilio_from_number="+12025550100", agents_dir=tmp_path / "agents"
        )
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
            bad = [
                await client.post("/calls", json={"to": TO, "message": m})
                for m in ("../../etc/passwd", "missing.wav", ".hidden", "a\x00b")
            ]
            bad.append(await client.post("/calls", json={"to": TO, "agent": "../sales"}))
            bad.append(await client.post("/calls", json={"to": TO, "agent": "nobody"}))
            ok = await client.post("/calls", json={"to": TO, "message": "promo.wav", "agent": "sales"})
    assert [r.status_code for r in bad] == [400] * 6, [r.text for r in bad]
    assert ok.status_code == 201, ok.text
    assert [c["Url"].split("?")[1] for c in rest.calls_created] == [
        "workflow=voicemail_drop&message=promo.wav&agent=sales"
    ]
    webhook = signed_webhook(server, webhook_params(), query="message=..%2F..%2Fetc%2Fpasswd")
    assert webhook.status_code == 400 and "plain file name" in webhook.text
    assert server.state.rejected == {"call_options": 7}


async def test_post_calls_gives_up_on_a_silent_twilio_api_and_names_no_host(server_factory):
    async def never_answer(reader, writer):
        await asyncio.sleep(30)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    server = server_factory(
        twilio_api_base_url=f"http://127.0.0.1:{port}", twilio_from_number="+12025550100", twilio_api_timeout_secs=1.0
    )
    t0 = time.monotonic()
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
        r = await client.post(f"{server.base_url}/calls", json={"to": TO})
    elapsed = time.monotonic() - t0
    silent.close()
    assert r.status_code == 502 and r.json() == {"detail": "could not reach Twilio's REST API"}
    assert elapsed < 5, elapsed


def test_short_api_keys_are_refused_at_startup_and_an_empty_token_store_path_means_memory():
    with pytest.raises(ValidationError, match="16 characters"):
        Settings(_env_file=None, api_keys="short")
    assert Settings(_env_file=None, token_store_path="").token_store_path is None


async def test_metrics_dependency_takes_metrics_keys_and_api_keys(tmp_path):
    """The prod engineer's /metrics takes `app.state.guard.require_metrics`; checked on a stand-in route."""
    import server as server_module

    port = free_port()
    settings = make_settings(tmp_path, port, metrics_keys="metrics-key-0123456789")
    app = server_module.create_app(settings)

    @app.get("/metrics-probe", dependencies=[app.state.guard.require_metrics])
    async def probe() -> dict:
        return {"ok": True}

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(settings))
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                if srv.started:
                    break
                await asyncio.sleep(0.05)
            codes = [
                (await client.get("/metrics-probe", headers=h)).status_code
                for h in ({}, {"Authorization": "Bearer metrics-key-0123456789"}, AUTH, {"Authorization": "Bearer nope"})
            ]
            # a metrics key reads metrics only
            calls = await client.get("/calls/CA1", headers={"Authorization": "Bearer metrics-key-0123456789"})
    finally:
        srv.should_exit = True
        await task
    assert codes == [401, 200, 200, 401] and calls.status_code == 401
    assert app.state.callgate.rejected == {"api_key": 3}
