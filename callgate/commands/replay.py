"""Replay an audio file through a call's pipeline offline, as fast as the CPU allows.

Accepts any WAV (converted to 8 kHz mono) or raw .ulaw. With --json: one JSON object per line, each
with `event` and `t_ms` (audio time): beep, beep_end, speech_start, speech_end, amd, play_message,
hangup, ..., and a final summary. `--workflow agent` adds the conversation's events: user_transcript,
bot_turn_start, bot_turn_end, interruption (heard_text, dropped_ms), backchannel, noise_ignored,
background_ignored, false_interruption_resumed, background_speech, user_turn_start, turn_end, latency; it replays in real time (its STT, LLM and TTS answer on the wall
clock) and runs offline with no keys (pocketsphinx, the scripted dialog, the offline voice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="WAV or raw .ulaw (8 kHz µ-law) file")
    parser.add_argument("--workflow", default=None, help="workflow to run (default: DEFAULT_WORKFLOW)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--message", help="message file name for voicemail_drop (inside MESSAGES_DIR)")
    parser.add_argument(
        "--tail", type=float, default=30.0, help="seconds of line silence after the file ends (default 30)"
    )
    parser.add_argument("--agent", help="agent workflow: agent file name inside AGENTS_DIR (default: example)")
    parser.add_argument(
        "--amd", choices=("on", "off"), default="on", help="agent workflow: off = inbound, talk at once"
    )
    parser.add_argument(
        "--speed", type=float, default=None,
        help="pace the file at X times real time (default: as fast as possible; the agent: 1)",
    )


def run(args: argparse.Namespace) -> int:
    from loguru import logger

    from callgate.audio import AudioFormatError, load_audio
    from callgate.cli import CliError
    from callgate.settings import get_settings
    from pipelines.call import CallConfig
    from pipelines.message import MessageCache
    from pipelines.replay import replay_pcm
    from pipelines.workflow_names import UnknownWorkflowError, check_workflow

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    settings = get_settings()
    workflow = args.workflow or settings.default_workflow
    try:
        check_workflow(workflow)
        pcm = load_audio(args.file)
    except (UnknownWorkflowError, AudioFormatError) as e:
        raise CliError(str(e)) from e
    params = {"workflow": workflow, **({"message": args.message} if args.message else {})}
    if args.agent:
        params["agent"] = args.agent
    if args.amd == "off":
        params["amd"] = "off"
    if args.speed is not None and not args.speed > 0:
        raise CliError("--speed must be > 0")
    if not args.tail >= 0:
        raise CliError("--tail must be >= 0")
    call = CallConfig(settings=settings, workflow=workflow, call_sid="replay", stream_sid="replay", params=params)

    def emit(event: dict) -> None:
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "t_ms"))
            print(f"{event['t_ms']:>8} ms  {event['event']:<14} {details}", flush=True)

    try:
        messages = MessageCache(settings.message_cache_dir)
        asyncio.run(replay_pcm(pcm, call, messages, tail_ms=args.tail * 1000, on_event=emit, speed=args.speed))
    except (AudioFormatError, ValueError) as e:  # a bad message or agent file
        raise CliError(str(e)) from e
    return 0
