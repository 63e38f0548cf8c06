"""GET /metrics after a real call through the real server: the call's verdict, beep, marks, outcome and
stream counters are in the Prometheus exposition, plus the event-loop lag and database gauges."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from callgate.audio import save_wav, to_int16
from callgate.synth import make_voicemail_greeting, speech, telephone_channel
from simulator.phone import simulate_call
from simulator.rest import RestStandIn
from tests.server.conftest import ACCOUNT_SID, AUTH, AUTH_TOKEN, FAST_STREAM, wait_until


def scrape(server) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{server.base_url}/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_a_voicemail_call(server_factory, tmp_path):
    greeting = make_voicemail_greeting("Hi, this is Sam. Leave a message after the tone.", beep_hz=1000, beep_secs=0.4)
    save_wav(tmp_path / "messages" / "m.wav", to_int16(telephone_channel(speech("Call us back."))))
    async with RestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as rest:
        server = server_factory(twilio_api_base_url=rest.base_url, **FAST_STREAM)
        before = scrape(server)
        assert value(before, "callgate_active_calls") == 0
        report = await simulate_call(
            to_int16(greeting.audio), f"{server.base_url}/twiml", speed=4.0, auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID, params={"message": "m.wav"}, rest=rest,
        )
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the call to end")
    httpx.get(f"{server.base_url}/ws/not-a-token")  # a plain GET on the stream path: not a stream, not counted
    m = scrape(server)

    assert value(m, "callgate_calls_total", workflow="voicemail_drop", outcome="message_played") == 1
    assert value(m, "callgate_active_calls") == 0
    verdicts = {k: v for k, v in m.items() if k[0] == "callgate_amd_verdicts_total"}
    assert sum(verdicts.values()) == 1, verdicts
    label = dict(next(iter(verdicts))[1])["label"]
    assert value(m, "callgate_amd_decision_seconds_count", workflow="voicemail_drop", label=label) == 1
    assert value(m, "callgate_beeps_total", workflow="voicemail_drop") == 1
    assert value(m, "callgate_beep_to_message_seconds_count") == 1
    assert value(m, "callgate_beep_to_message_seconds_bucket", le="0.1") == 1  # the message followed at once
    assert value(m, "callgate_marks_total", result="played") >= 1
    assert value(m, "callgate_actions_total", action="play_message") == 1
    assert value(m, "callgate_stream_events_total", kind="media_frames") > 100
    assert value(m, "callgate_stream_events_total", kind="gaps") == 0
    assert value(m, "callgate_stream_audio_seconds_total", direction="in") > 3
    assert 0.5 < value(m, "callgate_stream_audio_seconds_total", direction="out") < 3
    assert value(m, "callgate_webhooks_total", result="stream") == 1
    assert value(m, "callgate_event_loop_lag_seconds_count") > 10  # the timer task has been ticking
    assert ("callgate_db_queue_depth", ()) in m and value(m, "callgate_db_errors_total") == 0


async def test_metrics_count_rejections(server_factory):
    import websockets

    server = server_factory()
    ws_url = server.base_url.replace("http://", "ws://") + "/ws/forged-token"
    try:
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
    except (websockets.ConnectionClosed, websockets.InvalidStatus):
        pass
    await wait_until(lambda: server.state.rejected, what="the rejection")
    m = scrape(server)
    assert sum(v for k, v in m.items() if k[0] == "callgate_rejected_total") == 1
    assert httpx.get(f"{server.base_url}/metrics").status_code == 401  # the scrape needs a key


async def test_a_failed_twilio_update_counts_as_a_vendor_error(server_factory):
    from callgate.synth import concat, silence

    server = server_factory(**FAST_STREAM)  # TWILIO_API_BASE_URL points at a closed port
    hello = to_int16(telephone_channel(concat(silence(0.4), speech("Hello? Who is this?"), silence(3.0))))
    report = await simulate_call(hello, f"{server.base_url}/twiml", speed=4.0, auth_token=AUTH_TOKEN,
                                 account_sid=ACCOUNT_SID, tail_secs=2)
    sid = report.summary["call_sid"]
    await wait_until(lambda: sid in server.state.finished, what="the call to end")
    assert server.state.finished[sid].outcome.endswith("_failed")  # the human hand-off could not be made
    m = scrape(server)
    assert value(m, "callgate_vendor_errors_total", vendor="twilio") == 1
