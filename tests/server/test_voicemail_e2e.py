"""voicemail_drop end to end: simulator (Twilio side + REST stand-in) <-> real server over real sockets."""

from __future__ import annotations

import numpy as np

from callgate.audio import save_wav, to_int16
from callgate.synth import concat, make_voicemail_greeting, silence, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH_TOKEN, FAST_STREAM, wait_until


def short_message(tmp_path) -> str:
    """A 2-3 s message so the test stays quick."""
    path = tmp_path / "messages" / "short.wav"
    save_wav(path, to_int16(telephone_channel(speech("Please call us back. Goodbye."))))
    return path.name


async def test_message_plays_after_beep_and_hangup_follows_played_mark(server_factory, tmp_path):
    greeting = make_voicemail_greeting(
        "Hi, you have reached Sam. Please leave a message after the tone.", beep_hz=850, beep_secs=0.5
    )
    message = short_message(tmp_path)
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, **FAST_STREAM)
        report = await simulate_call(
            to_int16(greeting.audio),
            f"{server.base_url}/twiml",
            speed=2.0,
            auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            params={"message": message},
            rest=rest,
            tail_secs=20,
        )

    assert report.ok, report.summary
    media_starts = report.of("media_start")
    marks = report.of("mark")
    hangups = report.of("hangup")
    assert media_starts and marks and len(hangups) == 1, report.events
    # The message's first audio plays after the beep ends, never before.
    assert media_starts[0]["t_ms"] >= greeting.beep_offset_ms
    assert media_starts[0]["t_ms"] - greeting.beep_offset_ms < 1500  # ...and promptly
    # The final mark echoes as played, and the REST hang-up comes only after it.
    assert marks[-1]["name"] == "voicemail_message_end" and marks[-1]["played"] is True
    assert hangups[0]["t_ms"] >= marks[-1]["t_ms"]
    assert report.summary["ended_by"] == "hangup"
    assert report.summary["odd_sized_media"] == 0 and report.summary["media_chunks_received"] > 0

    # Server side, in audio time: beep_end precedes play_message; the call record agrees.
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the server to close the call")
    record = server.state.finished[sid]
    events = {e["event"]: e for e in record.events}
    assert abs(events["beep"]["hz"] - 850) <= 10
    assert abs(events["beep"]["onset_ms"] - greeting.beep_onset_ms) <= 60
    assert events["play_message"]["t_ms"] >= events["beep_end"]["t_ms"] >= greeting.beep_offset_ms - 60
    assert events["play_message"]["trigger"] == "beep"
    assert record.outcome == "message_played"
    hangup_requests = [r for r in rest.requests if r.get("form", {}).get("Status") == "completed"]
    assert len(hangup_requests) == 1


async def test_greeting_without_beep_plays_after_silence(server_factory, tmp_path):
    audio = concat(silence(0.3), speech(
        "Hi, you've reached Dana Miller. I can't take your call right now. "
        "Please leave your name and number and I will get back to you."), silence(0.2))
    message = short_message(tmp_path)
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, greeting_end_silence_secs=1.5, **FAST_STREAM)
        report = await simulate_call(
            to_int16(telephone_channel(audio)),
            f"{server.base_url}/twiml",
            speed=4.0,
            auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            params={"message": message},
            rest=rest,
        )
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the server to close the call")
    record = server.state.finished[sid]
    events = {e["event"]: e for e in record.events}
    assert "beep" not in events, record.events
    assert "play_message" in events, (record.events, record.counters, report.summary)
    assert events["play_message"]["trigger"] == "silence"
    assert events["play_message"]["t_ms"] - events["speech_end"]["t_ms"] >= 1500
    assert record.outcome == "message_played" and report.summary["ended_by"] == "hangup"


async def test_caller_hanging_up_early_ends_the_call_cleanly(server_factory):
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, **FAST_STREAM)
        audio = to_int16(telephone_channel(concat(speech("Hello? Who is this?"), silence(0.3))))
        report = await simulate_call(
            audio,
            f"{server.base_url}/twiml",
            speed=None,
            auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            rest=rest,
            tail_secs=0,
        )
        sid = report.summary["call_sid"]
        # Twilio outlives the caller: the server may still act on audio it has not caught up with.
        await wait_until(lambda: sid in server.state.finished, what="the server to close the call")
    assert report.summary["ended_by"] == "audio_end"
    record = server.state.finished[sid]
    assert record.outcome == "remote_hangup"
    assert not report.of("media_start")
    assert not [r for r in rest.requests if r.get("form", {}).get("Status") == "completed"]
    assert np.isfinite(record.counters["audio_ms"])
