"""`callgate simulate`: JSON lines, readable summary, and one-line errors (no tracebacks)."""

from __future__ import annotations

import asyncio
import json

from callgate.audio import save_wav
from callgate.cli import main
from tests.simulator.conftest import Session, tone


async def run_cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, ["simulate", *argv])  # asyncio.run needs its own thread


async def test_cli_json_lines(fake_server, tmp_path, capsys):
    async def script(session: Session) -> None:
        await session.send_media(400)
        await session.send_mark("hello")
        await session.wait_event("mark")

    server = await fake_server(script)
    wav = save_wav(tmp_path / "in.wav", tone(100))
    rc = await run_cli(
        [
            str(wav),
            "--url",
            server.url,
            "--speed",
            "5",
            "--tail",
            "2",
            "--json",
            "--workflow",
            "w",
            "--param",
            "k=v=2",
            "--save-received",
            str(tmp_path / "out.wav"),
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    lines = [json.loads(line) for line in out]
    assert all("event" in e and "t_ms" in e for e in lines)
    assert [e["event"] for e in lines] == ["media_start", "bot_audio_start", "mark", "bot_audio_end", "summary"]
    assert (
        lines[2]["name"] == "hello"
        and lines[2]["played"] is True
        and lines[2]["t_ms"] == lines[0]["t_ms"] + 400
        and lines[3]["t_ms"] == lines[2]["t_ms"]  # the bot's audio ended with its mark
    )
    assert lines[-1]["ended_by"] == "audio_end" and lines[-1]["frames_sent"] == 105
    assert server.webhooks[0]["query"] == {"workflow": "w", "k": "v=2"}
    assert (tmp_path / "out.wav").stat().st_size > 44


async def test_cli_readable_summary_with_rest_port(fake_server, tmp_path, capsys):
    server = await fake_server()
    wav = save_wav(tmp_path / "in.wav", tone(40))
    rc = await run_cli([str(wav), "--url", server.url, "--speed", "10", "--tail", "0", "--rest-port", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "REST stand-in at http://127.0.0.1:" in out and "ended by audio_end" in out


async def test_cli_errors_are_one_line(fake_server, tmp_path, capsys):
    wav = save_wav(tmp_path / "in.wav", tone(40))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    server = await fake_server(auth_token="right")
    cases = [
        ([str(wav), "--url", "http://127.0.0.1:9", "--fast"], "cannot reach"),
        ([str(bad), "--url", server.url], "not a WAV"),
        ([str(wav), "--url", server.url, "--param", "novalue"], "K=V"),
        ([str(wav), "--url", server.url, "--fast", "--auth-token", "wrong"], "HTTP 403"),
        ([str(wav), "--url", server.url, "--speed", "0"], "--speed"),
    ]
    for argv, needle in cases:
        rc = await run_cli(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            rc == 2 and len(err) == 1 and err[0].startswith("callgate simulate: error:") and needle in err[0]
        ), err
