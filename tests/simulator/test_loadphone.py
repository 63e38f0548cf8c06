"""The lean load generator's wire handling: frames it writes, server messages it reads without decoding."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import numpy as np

from simulator.loadphone import LoadCall, PreparedAudio, _WsClient, summarize, ws_frame


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def unframe(data: bytes) -> tuple[int, bytes]:
    """A client frame: opcode and payload (the zero masking key leaves the payload as is)."""
    n, pos = data[1] & 0x7F, 2
    if n == 126:
        n, pos = struct.unpack_from("!H", data, 2)[0], 4
    assert data[1] & 0x80 and data[pos : pos + 4] == b"\x00\x00\x00\x00"
    return data[0] & 0x0F, data[pos + 4 : pos + 4 + n]


def server_frame(text: str) -> bytes:
    raw = text.encode()
    head = bytes((0x81, len(raw))) if len(raw) < 126 else bytes((0x81, 126)) + struct.pack("!H", len(raw))
    return head + raw


async def test_packets_are_twilio_media_messages_and_server_audio_is_timed_without_decoding():
    audio = PreparedAudio.from_pcm(np.arange(400, dtype=np.int16))  # 50 ms -> 3 packets (the last padded)
    call = LoadCall(audio=audio, total_frames=5, call_sid="CA1", account_sid="AC1")
    call.transport = FakeTransport()  # type: ignore[assignment]
    assert all(call.send_next_frame() for _ in range(5)) and not call.send_next_frame()
    assert call.ended_by == "audio_end"
    msgs = [json.loads(unframe(w)[1]) for w in call.transport.written]  # type: ignore[union-attr]
    assert [m["media"]["chunk"] for m in msgs] == ["1", "2", "3", "4", "5"]
    assert [m["media"]["timestamp"] for m in msgs] == ["0", "20", "40", "60", "80"]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in msgs)
    assert msgs[4]["media"]["payload"] == base64.b64encode(b"\xff" * 160).decode()  # line silence after

    call = LoadCall(audio=audio, total_frames=100, call_sid="CA2", account_sid="AC1")
    call.transport = FakeTransport()  # type: ignore[assignment]
    proto = _WsClient(call, b"")
    proto.upgraded.set_result(None)
    media = json.dumps({"event": "media", "streamSid": call.stream_sid, "media": {"payload": base64.b64encode(
        b"\xff" * 800).decode()}})
    mark = json.dumps({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "end"}})
    wire = server_frame(media) + server_frame(mark)
    proto.data_received(wire[:7])  # split anywhere: frames are reassembled
    proto.data_received(wire[7:])
    assert call.media_starts == [0] and call.media_bytes == 800
    call.transport.written.clear()  # type: ignore[union-attr]
    for _ in range(5):  # the mark is echoed once the 100 ms queued before it has played
        call.send_next_frame()
    echoed = [json.loads(unframe(w)[1]) for w in call.transport.written]  # type: ignore[union-attr]
    assert [m["event"] for m in echoed] == ["media"] * 5 + ["mark"] and echoed[-1]["mark"]["name"] == "end"
    proto.data_received(bytes((0x88, 2)) + struct.pack("!H", 1000))
    assert call.ended_by == "server_closed" and call.close_code == 1000
    row = summarize([call], anchor_ms=0.0)[0]
    assert row["ok"] is False and row["reaction_ms"] == 0 and "server_closed" in row["error"]
    assert ws_frame(b"x" * 200)[1] == 0x80 | 126


def test_a_hang_up_through_the_rest_stand_in_ends_the_call_once():
    async def run() -> None:
        call = LoadCall(audio=PreparedAudio.from_pcm(np.zeros(160, np.int16)), total_frames=1, call_sid="CA3",
                        account_sid="AC1")
        assert call.hangup() and not call.hangup() and call.ended.is_set() and call.ended_by == "hangup"

    asyncio.run(run())
