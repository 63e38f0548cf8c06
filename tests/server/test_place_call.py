"""POST /calls: outbound calls through Twilio's REST API (the simulator's stand-in)."""

from __future__ import annotations

import httpx

from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN

TO = "+12025550123"  # a valid US number (phonenumbers checks destinations)


async def test_place_call_creates_a_call_pointing_at_the_webhook(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, twilio_from_number="+15550009999")
        async with httpx.AsyncClient(headers=AUTH) as client:
            ok = await client.post(f"{server.base_url}/calls", json={"to": TO, "workflow": "power_dial"})
            bad_number = await client.post(f"{server.base_url}/calls", json={"to": "555-1234"})
            bad_workflow = await client.post(f"{server.base_url}/calls", json={"to": TO, "workflow": "x"})
            not_json = await client.post(f"{server.base_url}/calls", content=b"{", headers={"content-type": "application/json"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["call_sid"].startswith("CA") and ok.json()["workflow"] == "power_dial"
    created = rest.calls_created[0]
    assert created["To"] == TO and created["From"] == "+15550009999"
    assert created["Url"] == f"{server.settings.public_base_url}/twiml?workflow=power_dial"
    assert bad_number.status_code == 422 and bad_workflow.status_code == 400 and not_json.status_code == 422


async def test_place_call_without_credentials_or_unreachable_twilio(server_factory):
    server = server_factory(twilio_auth_token=None, twilio_from_number="+15550009999")
    r = httpx.post(f"{server.base_url}/calls", json={"to": TO}, headers=AUTH)
    assert r.status_code == 503 and "TWILIO_AUTH_TOKEN" in r.json()["detail"]
    down = server_factory(twilio_api_base_url="http://127.0.0.1:9", twilio_from_number="+15550009999")
    r = httpx.post(f"{down.base_url}/calls", json={"to": TO}, headers=AUTH, timeout=30)
    assert r.status_code == 502 and "Twilio" in r.json()["detail"]
    assert "127.0.0.1" not in r.text and ":9" not in r.text  # no internal host in error bodies
