"""TwilioIngestSerializer on its own: inbound events, audio time, outbound framing."""

from __future__ import annotations

import base64
import json

import pytest
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, InterruptionFrame, OutputAudioRawFrame

from callgate.audio import pcm_to_ulaw
from processors.frames import TwilioMarkFrame, TwilioStopFrame
from processors.twilio_ingest import TwilioIngestSerializer, parse_start

FRAME = base64.b64encode(pcm_to_ulaw(b"\x10\x00" * 160)).decode()


def media(chunk: int | None, ts: int | None) -> str:
    m = {"payload": FRAME, "track": "inbound"}
    if chunk is not None:
        m["chunk"] = str(chunk)
    if ts is not None:
        m["timestamp"] = str(ts)
    return json.dumps({"event": "media", "media": m})


async def test_inbound_events_become_frames():
    s = TwilioIngestSerializer("MZ1", "CA1")
    assert isinstance(await s.deserialize(media(1, 0)), InputAudioRawFrame)
    mark = await s.deserialize(json.dumps({"event": "mark", "mark": {"name": "n"}}))
    assert isinstance(mark, TwilioMarkFrame) and mark.mark_name == "n"
    dtmf = await s.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "7"}}))
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button.value == "7"
    stop = await s.deserialize(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
    assert isinstance(stop, TwilioStopFrame) and stop.audio_ms == 20 and s.stopped


async def test_gap_duplicate_and_reordered_packets_keep_audio_time_true():
    s = TwilioIngestSerializer("MZ1", "CA1")
    sizes = []
    for chunk, ts in [(1, 20), (2, 40), (5, 100), (5, 100), (3, 60), (6, 120)]:
        f = await s.deserialize(media(chunk, ts))
        sizes.append(None if f is None else len(f.audio) // 2)
    assert sizes == [160, 160, 160 * 3, None, None, 160]
    assert s.audio_ms == 6 * 20
    assert s.counters["gaps"] == 1 and s.counters["gap_fill_ms"] == 40
    assert s.counters["duplicate_or_late"] == 2


async def test_absurd_timestamp_jump_is_capped():
    s = TwilioIngestSerializer("MZ1", "CA1")
    await s.deserialize(media(1, 0))
    f = await s.deserialize(media(2, 10_000_000))
    assert len(f.audio) // 2 == 5_000 * 8 + 160 and s.counters["gap_capped"] == 1


@pytest.mark.parametrize(
    "data,counter",
    [(b"\x01\x02", "binary"), ("{", "malformed_json"), ('"str"', "malformed_json"),
     ("x" * (65 * 1024), "oversize"), (json.dumps({"event": "what"}), "unknown_event"),
     (json.dumps({"event": "media", "media": {"payload": "@@@"}}), "bad_payload"),
     (json.dumps({"event": "media", "media": "nope"}), "bad_fields"),
     (json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}), "bad_dtmf"),
     (json.dumps({"event": "start", "start": {}}), "repeated_start")],
)
async def test_bad_messages_are_counted_not_raised(data, counter):
    s = TwilioIngestSerializer("MZ1", "CA1")
    assert await s.deserialize(data) is None
    assert s.counters[counter] == 1


async def test_outbound_audio_leaves_in_whole_20ms_frames():
    s = TwilioIngestSerializer("MZ1", "CA1")
    out = await s.serialize(OutputAudioRawFrame(audio=b"\x00\x00" * 250, sample_rate=8000, num_channels=1))
    assert len(base64.b64decode(json.loads(out)["media"]["payload"])) == 160
    assert await s.serialize(OutputAudioRawFrame(audio=b"\x00\x00" * 30, sample_rate=8000, num_channels=1)) is None
    out = await s.serialize(OutputAudioRawFrame(audio=b"\x00\x00" * 40, sample_rate=8000, num_channels=1))
    assert len(base64.b64decode(json.loads(out)["media"]["payload"])) == 160
    clear = json.loads(await s.serialize(InterruptionFrame()))
    assert clear == {"event": "clear", "streamSid": "MZ1"}


def test_parse_start_validates():
    start = parse_start({"event": "start", "streamSid": "MZ1",
                         "start": {"callSid": "CA1", "customParameters": {"workflow": "voicemail_drop"}}})
    assert start.call_sid == "CA1" and start.custom_parameters == {"workflow": "voicemail_drop"}
    with pytest.raises(ValueError):
        parse_start({"event": "start", "start": {"streamSid": "MZ1"}})
