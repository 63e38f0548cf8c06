"""Twilio AMD drop-in, piece by piece: parameter parsing, the AnsweredBy mapping, the signed callback
and its retries (against a real local HTTP server)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request, Response
from twilio.request_validator import RequestValidator

from pipelines.twilio_amd import (
    AnsweredByTracker,
    TwilioAmdConfig,
    callback_request,
    greeting_end_silence_ms,
    post_answered_by,
)
from simulator.serve import BackgroundServer

TOKEN = "auth-token-xyz"
FIELDS = {"AccountSid": "AC" + "1" * 32, "CallSid": "CA" + "2" * 32, "AnsweredBy": "human", "MachineDetectionDuration": "740"}


def tracker(mode: str = "DetectMessageEnd", **params: str) -> AnsweredByTracker:
    config = TwilioAmdConfig.from_params({"MachineDetection": mode, **params})
    assert config is not None
    return AnsweredByTracker(config)


def test_config_from_call_params_ignores_other_params_and_applies_twilio_defaults():
    assert TwilioAmdConfig.from_params({"workflow": "voicemail_drop", "message": "m.wav"}) is None
    cfg = TwilioAmdConfig.from_params({"workflow": "x", "MachineDetection": "Enable", "MachineDetectionSilenceTimeout": "3000"})
    assert cfg is not None and not cfg.detect_message_end and cfg.timeout_ms == 30_000
    assert cfg.silence_timeout_ms == 3000 and cfg.callback_url is None and cfg.callback_method == "POST"
    with pytest.raises(ValueError, match="MachineDetectionTimeout must be 3-59"):
        TwilioAmdConfig.from_params({"MachineDetection": "Enable", "MachineDetectionTimeout": "120"})
    params = {"MachineDetection": "DetectMessageEnd", "MachineDetectionSpeechEndThreshold": "1200"}
    assert greeting_end_silence_ms(params) == 1200.0
    assert greeting_end_silence_ms({"MachineDetection": "DetectMessageEnd"}) is None


@pytest.mark.parametrize(
    ("mode", "label", "expected"),
    [
        ("Enable", "human", "human"),
        ("Enable", "machine", "machine_start"),
        ("Enable", "ivr", "machine_start"),
        ("Enable", "carrier_intercept", "unknown"),
        ("Enable", "unknown", "unknown"),
        ("DetectMessageEnd", "human", "human"),
        ("DetectMessageEnd", "ivr", "machine_end_other"),
        ("DetectMessageEnd", "carrier_intercept", "unknown"),
        ("DetectMessageEnd", "unknown", "unknown"),
    ],
)
def test_verdict_labels_map_to_twilio_answered_by_at_the_verdict(mode, label, expected):
    t = tracker(mode)
    result = t.verdict(label, 812.0)
    assert result is not None and result.answered_by == expected and result.duration_ms == 812
    assert t.verdict("machine", 900.0) is None and t.end(5000.0) is None  # one report per call


def test_detect_message_end_waits_for_the_beep_and_times_it_at_the_beep_end():
    t = tracker()
    t.speech_start(300.0)
    assert t.verdict("machine", 1100.0) is None  # a machine: wait for its greeting's end
    assert t.tick(4000.0) is None
    assert t.beep(4300.0) is None
    t.beep_end(4710.0)
    result = t.message_start("beep", 4740.0)
    assert result is not None and (result.answered_by, result.duration_ms) == ("machine_end_beep", 4710)


def test_detect_message_end_greeting_end_on_silence_and_on_nothing():
    t = tracker()
    t.verdict("machine", 900.0)
    result = t.message_start("silence", 6400.0)
    assert result is not None and (result.answered_by, result.duration_ms) == ("machine_end_silence", 6400)
    t = tracker(MachineDetectionTimeout="10")
    t.verdict("machine", 900.0)
    assert t.tick(9980.0) is None
    result = t.tick(10_000.0)
    assert result is not None and (result.answered_by, result.cause) == ("machine_end_other", "timeout")
    t = tracker()
    t.verdict("machine", 900.0)
    result = t.end(3000.0)  # the call ended before the greeting did
    assert result is not None and result.answered_by == "machine_end_other"


def test_enable_reports_a_beep_before_any_verdict_as_machine_start():
    t = tracker("Enable")
    result = t.beep(2300.0)
    assert result is not None and (result.answered_by, result.duration_ms) == ("machine_start", 2300)


def test_silence_timeout_reports_unknown_only_while_nobody_spoke():
    t = tracker("Enable", MachineDetectionSilenceTimeout="2000")
    assert t.tick(1980.0) is None
    result = t.tick(2000.0)
    assert result is not None and (result.answered_by, result.duration_ms) == ("unknown", 2000)
    t = tracker("Enable", MachineDetectionSilenceTimeout="2000")
    t.speech_start(1500.0)
    assert t.tick(2500.0) is None
    result = t.end(2600.0)
    assert result is not None and result.answered_by == "unknown"


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_callback_is_signed_like_twilio_over_the_callback_url(method):
    url = "https://app.example.com/amd?campaign=7"
    full, form, headers = callback_request(url, method, FIELDS, TOKEN)
    validator = RequestValidator(TOKEN)
    if method == "POST":
        assert full == url and form == FIELDS
        assert validator.validate(url, FIELDS, headers["X-Twilio-Signature"])
    else:
        assert form is None and full.startswith(url + "&") and "AnsweredBy=human" in full
        assert validator.validate(full, {}, headers["X-Twilio-Signature"])
    assert not RequestValidator("another-token").validate(full, form or {}, headers["X-Twilio-Signature"])
    _, _, unsigned = callback_request(url, method, FIELDS, None)
    assert "X-Twilio-Signature" not in unsigned


async def test_callback_retries_server_errors_with_backoff_then_delivers():
    seen: list[dict[str, Any]] = []
    answers = [503, 500, 204]
    app = FastAPI()

    @app.post("/amd")
    async def amd(request: Request) -> Response:
        seen.append(dict(parse_qsl((await request.body()).decode())))
        return Response(status_code=answers[len(seen) - 1])

    server = BackgroundServer(app)
    await server.start()
    try:
        ok = await post_answered_by(f"{server.base_url}/amd", "POST", FIELDS, TOKEN, delays=(0.01, 0.02, 0.04))
    finally:
        await server.stop()
    assert ok and seen == [FIELDS] * 3


async def test_callback_gives_up_on_client_errors_and_on_an_unreachable_server():
    tries: list[int] = []
    app = FastAPI()

    @app.post("/amd")
    async def amd() -> Response:
        tries.append(1)
        return Response(status_code=404)

    server = BackgroundServer(app)
    await server.start()
    try:
        assert not await post_answered_by(f"{server.base_url}/amd", "POST", FIELDS, TOKEN, delays=(0.01, 0.01))
    finally:
        await server.stop()
    assert len(tries) == 1  # a 4xx is the app's answer: not retried
    assert not await post_answered_by("http://127.0.0.1:9/amd", "POST", FIELDS, TOKEN, delays=(0.01, 0.01))


async def test_greeting_end_on_silence_uses_speech_end_threshold_and_reports_machine_end_silence(tmp_path):
    """The real pipeline (replay): a greeting with no beep; MachineDetectionSpeechEndThreshold=1000 makes
    voicemail_drop start its message 1.0 s after the greeting (not GREETING_END_SILENCE_SECS=2.5 s), and
    that moment is AnsweredBy=machine_end_silence's MachineDetectionDuration."""
    from callgate.audio import to_int16
    from callgate.settings import Settings
    from callgate.synth import concat, silence, speech, telephone_channel
    from pipelines.call import CallConfig
    from pipelines.message import MessageCache
    from pipelines.replay import replay_pcm

    greeting = speech(
        "Hi, you've reached Dana Miller. I can't take your call right now. Please leave your name and number.",
        voice="en-us+f3",
    )
    pcm = to_int16(telephone_channel(concat(silence(0.4), greeting, silence(4.0))))
    settings = Settings(_env_file=None, message_cache_dir=tmp_path / "cache", greeting_end_silence_secs=2.5)
    params = {"MachineDetection": "DetectMessageEnd", "MachineDetectionSpeechEndThreshold": "1000"}
    call = CallConfig(settings=settings, workflow="voicemail_drop", call_sid="CA" + "5" * 32, params=params)
    result = await replay_pcm(pcm, call, MessageCache(settings.message_cache_dir), tail_ms=5000)
    events = {e["event"]: e for e in result.events}
    ends = [e["t_ms"] for e in result.events if e["event"] == "speech_end"]
    assert events["play_message"]["trigger"] == "silence", result.events
    assert 1000 <= events["play_message"]["t_ms"] - ends[-1] < 1300
    answered = events["answered_by"]
    assert answered["answered_by"] == "machine_end_silence" and answered["callback"] is False
    assert answered["machine_detection_duration_ms"] == events["play_message"]["t_ms"]


async def test_reporter_never_waits_on_a_slow_callback(tmp_path):
    """The callback server takes 2 s to answer: the call's frames flow on at once, the callback lands later."""
    import asyncio
    import time

    from pipecat.frames.frames import InputAudioRawFrame
    from pipecat.tests.utils import run_test

    from callgate.settings import Settings
    from pipelines.call import CallConfig
    from pipelines.twilio_amd import TwilioAmdReporter
    from processors.frames import AmdVerdictFrame, CallActionFrame

    got: list[dict[str, str]] = []
    app = FastAPI()

    @app.post("/amd")
    async def amd(request: Request) -> Response:
        await asyncio.sleep(2.0)
        got.append(dict(parse_qsl((await request.body()).decode())))
        return Response(status_code=204)

    server = BackgroundServer(app)
    await server.start()
    try:
        settings = Settings(_env_file=None, twilio_account_sid=FIELDS["AccountSid"], twilio_auth_token=TOKEN)
        params = {"MachineDetection": "Enable", "AsyncAmd": "true", "AsyncAmdStatusCallback": f"{server.base_url}/amd"}
        call = CallConfig(settings=settings, workflow="power_dial", call_sid=FIELDS["CallSid"], params=params)
        reporter = TwilioAmdReporter.for_call(call)
        assert reporter is not None
        audio = [InputAudioRawFrame(audio=b"\0\0" * 160, sample_rate=8000, num_channels=1) for _ in range(10)]
        t0 = time.monotonic()
        down, _ = await run_test(reporter, frames_to_send=[*audio, AmdVerdictFrame(label="human", t_ms=180.0), *audio])
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5 and not got  # the pipeline did not wait for the callback
        answered = [f for f in down if isinstance(f, CallActionFrame) and f.action == "answered_by"]
        assert len(answered) == 1 and answered[0].details["answered_by"] == "human"
        assert reporter.task is not None and await asyncio.wait_for(reporter.task, 10) is True
    finally:
        await server.stop()
    assert got == [{**FIELDS, "AnsweredBy": "human", "MachineDetectionDuration": "180"}]
