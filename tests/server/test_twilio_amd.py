"""The Twilio AMD drop-in end to end: POST /calls with Twilio's AMD parameters -> the REST stand-in
creates the call -> the simulator answers it -> callgate POSTs AnsweredBy to a real local callback
server, signed so that twilio's RequestValidator accepts it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
from fastapi import FastAPI, Request, Response
from twilio.request_validator import RequestValidator

from callgate.audio import save_wav, to_int16
from callgate.synth import concat, make_voicemail_greeting, silence, speech, telephone_channel
from pipelines.twilio_amd import TWILIO_AMD_PARAMS
from simulator.phone import CallReport, simulate_call
from simulator.rest import RestStandIn
from simulator.serve import BackgroundServer
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN, FAST_STREAM, wait_until

BEEP_TO, HUMAN_TO, SILENCE_TO = "+12025550101", "+12025550102", "+12025550103"


class CallbackServer:
    """A real HTTP server recording every AnsweredBy callback (URL, form, signature header)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/amd")
        async def amd(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            self.received.append(
                {"url": str(request.url), "form": form, "signature": request.headers.get("x-twilio-signature")}
            )
            return Response(status_code=204)

        self.http = BackgroundServer(app)

    @property
    def url(self) -> str:
        return f"{self.http.base_url}/amd"

    def for_call(self, sid: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["form"].get("CallSid") == sid]


async def test_post_calls_with_twilio_amd_params_gets_signed_answered_by_callbacks(server_factory, tmp_path):
    greeting = make_voicemail_greeting(
        "Hi, you have reached Sam. Please leave a message after the tone.", beep_hz=850, beep_secs=0.5
    )
    audio_for = {
        BEEP_TO: to_int16(greeting.audio),
        HUMAN_TO: to_int16(telephone_channel(concat(silence(0.6), speech("Hello?", voice="en-us+m3"), silence(4.0)))),
        SILENCE_TO: to_int16(telephone_channel(silence(7.0))),
    }
    save_wav(tmp_path / "messages" / "short.wav", to_int16(telephone_channel(speech("Please call us back."))))
    reports: dict[str, CallReport] = {}

    async def answer(created: dict[str, Any]) -> None:  # the simulated callee picks up the created call
        reports[created["To"]] = await simulate_call(
            audio_for[created["To"]], created["Url"], speed=2.0, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
            call_sid=created["sid"], rest=rest, tail_secs=0 if created["To"] == SILENCE_TO else 3,
        )

    hook = CallbackServer()
    await hook.http.start()
    # A callback URL over 256 characters arrives whole (it used to be cut to 256, posting elsewhere)
    callback = f"{hook.url}?campaign=spring-{'x' * 300}&list=7"
    try:
        async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, on_create=answer) as rest:
            server = server_factory(
                twilio_api_base_url=rest.base_url, twilio_from_number="+12025550199", callback_private_hosts=True,
                **FAST_STREAM,
            )
            amd = {"AsyncAmd": "true", "AsyncAmdStatusCallback": callback, "AsyncAmdStatusCallbackMethod": "POST"}
            bodies = {
                BEEP_TO: {"MachineDetection": "DetectMessageEnd", "MachineDetectionTimeout": 30, "message": "short.wav"},
                HUMAN_TO: {"MachineDetection": "DetectMessageEnd"},
                SILENCE_TO: {"MachineDetection": "Enable", "MachineDetectionSpeechThreshold": 2400},
            }
            sids: dict[str, str] = {}
            async with httpx.AsyncClient() as client:
                for to, extra in bodies.items():
                    r = await client.post(f"{server.base_url}/calls", json={"to": to, **amd, **extra}, headers=AUTH)
                    assert r.status_code == 201, r.text
                    sids[to] = r.json()["call_sid"]
                    # Every Twilio parameter given is answered with what callgate does with it.
                    assert set(r.json()["twilio_amd"]) == {k for k in {**amd, **extra} if k in TWILIO_AMD_PARAMS}
            await wait_until(lambda: len(reports) == 3, timeout=60, what="the three simulated calls")
            await wait_until(lambda: all(s in server.state.finished for s in sids.values()), what="calls to end")
            await wait_until(lambda: len(hook.received) >= 3, what="three callbacks")
    finally:
        await hook.http.stop()

    # The AMD parameters are callgate's: never passed on to Twilio, they travel in the webhook URL.
    for created in rest.calls_created:
        assert not set(created) & set(TWILIO_AMD_PARAMS), created
        query = parse_qs(urlsplit(created["Url"]).query)
        assert query["MachineDetection"][0] in ("Enable", "DetectMessageEnd")
        assert query["AsyncAmdStatusCallback"] == [callback]

    validator = RequestValidator(AUTH_TOKEN)
    got: dict[str, dict[str, str]] = {}
    for to, sid in sids.items():
        callbacks = hook.for_call(sid)
        assert len(callbacks) == 1, (to, hook.received)  # exactly one AnsweredBy per call
        cb = callbacks[0]
        assert cb["url"] == callback
        assert validator.validate(cb["url"], cb["form"], cb["signature"]), cb
        assert not validator.validate(cb["url"], {**cb["form"], "AnsweredBy": "human?"}, cb["signature"])
        assert cb["form"]["AccountSid"] == ACCOUNT_SID and cb["form"]["CallSid"] == sid
        got[to] = cb["form"]

    def events(to: str) -> dict[str, dict[str, Any]]:
        return {e["event"]: e for e in server.state.finished[sids[to]].events}

    # A greeting with a beep: machine_end_beep, timed at the end of the beep.
    beep = events(BEEP_TO)
    assert got[BEEP_TO]["AnsweredBy"] == "machine_end_beep", beep
    duration = int(got[BEEP_TO]["MachineDetectionDuration"])
    assert duration == round(beep["beep_end"]["t_ms"]) and abs(duration - greeting.beep_offset_ms) <= 60
    assert beep["play_message"]["trigger"] == "beep" and beep["answered_by"]["answered_by"] == "machine_end_beep"
    assert reports[BEEP_TO].of("media_start")  # the message still played after the beep

    # A pickup: human, timed at callgate's human verdict (right after "Hello?").
    human = events(HUMAN_TO)
    assert got[HUMAN_TO]["AnsweredBy"] == "human" and human["amd"]["label"] == "human", human
    assert int(got[HUMAN_TO]["MachineDetectionDuration"]) == human["amd"]["t_ms"]
    assert human["amd"]["t_ms"] - human["speech_end"]["t_ms"] <= 1000
    assert not reports[HUMAN_TO].of("media_start")

    # Silence: unknown, timed at callgate's no-answer verdict.
    quiet = events(SILENCE_TO)
    assert got[SILENCE_TO]["AnsweredBy"] == "unknown" and quiet["amd"]["label"] == "unknown", quiet
    assert int(got[SILENCE_TO]["MachineDetectionDuration"]) == quiet["amd"]["t_ms"] <= 7000


async def test_unknown_or_contradictory_amd_params_get_422_naming_the_parameter(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(
            twilio_api_base_url=rest.base_url, twilio_from_number="+12025550199", place_call_rate_limit="100/minute"
        )
        cases = {
            "MachineDetectionFoo": {"MachineDetection": "Enable", "MachineDetectionFoo": "1"},
            "machine_detection": {"machine_detection": "Enable"},
            "MachineDetection must be": {"MachineDetection": "Maybe"},
            "MachineDetectionTimeout": {"MachineDetection": "Enable", "MachineDetectionTimeout": 90},
            "MachineDetectionSpeechThreshold": {"MachineDetection": "Enable", "MachineDetectionSpeechThreshold": 99},
            "MachineDetectionSilenceTimeout needs MachineDetection": {"MachineDetectionSilenceTimeout": 3000},
            "AsyncAmdStatusCallback needs AsyncAmd=true": {
                "MachineDetection": "Enable", "AsyncAmd": "false", "AsyncAmdStatusCallback": "http://x.example/amd"
            },
            "AsyncAmd=true needs AsyncAmdStatusCallback": {"MachineDetection": "Enable", "AsyncAmd": True},
            "AsyncAmdStatusCallback must be": {
                "MachineDetection": "Enable", "AsyncAmd": True, "AsyncAmdStatusCallback": "ftp://x/amd"
            },
            "AsyncAmdStatusCallbackMethod must be": {
                "MachineDetection": "Enable", "AsyncAmd": True, "AsyncAmdStatusCallback": "http://x.example/a",
                "AsyncAmdStatusCallbackMethod": "PUT",
            },
            "DetectMessageEnd cannot be used with workflow 'power_dial'": {
                "MachineDetection": "DetectMessageEnd", "workflow": "power_dial"
            },
        }
        async with httpx.AsyncClient() as client:
            replies = await asyncio.gather(
                *(client.post(f"{server.base_url}/calls", json={"to": "+12025550123", **b}, headers=AUTH) for b in cases.values())
            )
    for (expected, body), r in zip(cases.items(), replies, strict=True):
        assert r.status_code == 422, (body, r.text)
        assert expected in r.text, (expected, r.json())
    assert not rest.calls_created  # nothing reached Twilio


async def test_a_callback_on_this_machine_is_refused_unless_private_hosts_are_allowed(server_factory):
    """callgate signs the AnsweredBy request: an API key must not aim it at the server's own network."""
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, twilio_from_number="+12025550199")
        body = {
            "to": "+12025550123", "MachineDetection": "Enable", "AsyncAmd": True,
            "AsyncAmdStatusCallback": "http://169.254.169.254/latest/meta-data/",
        }
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{server.base_url}/calls", json=body, headers=AUTH)
    assert r.status_code == 400 and "non-public address (169.254.169.254)" in r.json()["detail"], r.text
    assert "CALLBACK_PRIVATE_HOSTS" in r.json()["detail"]
    assert not rest.calls_created  # nothing reached Twilio
