"""Benchmark: how long `callgate replay` takes on 60 s of call audio (target: < 2 s on this machine).

Builds a 60 s call (a spoken greeting, a beep, then the line silent) so every processor is busy,
replays it through the same pipeline the server runs, and prints the measured times.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callgate.settings import Settings  # noqa: E402
from callgate.synth import speech  # noqa: E402
from pipelines.call import CallConfig  # noqa: E402
from pipelines.message import MessageCache  # noqa: E402
from pipelines.replay import replay_pcm  # noqa: E402

SECONDS = 60.0


def build_audio() -> np.ndarray:
    greeting = speech("Hello, you have reached the Ortiz family. We are not home right now. "
                      "Please leave your name and number and we will call you back as soon as we can.")
    # No beep and pauses shorter than the greeting-end silence: the workflow listens for the whole minute.
    x = np.concatenate([greeting.astype(np.float32), np.zeros(8000, np.float32)])
    reps = int(np.ceil(SECONDS * 8000 / len(x)))
    x = np.tile(x, reps)[: int(SECONDS * 8000)]
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


async def one_run(pcm: np.ndarray, settings: Settings, messages: MessageCache) -> float:
    call = CallConfig(settings=settings, workflow="voicemail_drop", params={"workflow": "voicemail_drop"})
    t0 = time.perf_counter()
    result = await replay_pcm(pcm, call, messages, tail_ms=0)
    elapsed = time.perf_counter() - t0
    assert result.summary["t_ms"] >= SECONDS * 1000, result.summary  # the whole minute went through
    return elapsed


def listen_only_presets(path: Path) -> Path:
    """AMD presets whose only detector is a timer past the end: the model still scores every 100 ms
    step, but no verdict ends the call early, so the whole minute goes through every processor."""
    timer = {"name": "timeout", "label": "unknown", "classes": [], "threshold": 0.0, "window_ms": 100,
             "min_delay_ms": (SECONDS + 60) * 1000}
    path.write_text(json.dumps({"version": 1, "workflows": {"voicemail_drop": {"detectors": [timer]}}}))
    return path


def main() -> None:
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    pcm = build_audio()
    presets = listen_only_presets(Path(tempfile.mkdtemp()) / "presets.json")
    settings = Settings(_env_file=None, call_timeout_secs=SECONDS + 10, amd_presets_path=presets)
    messages = MessageCache(Path("/tmp/callgate-bench-cache"))
    runs = [asyncio.run(one_run(pcm, settings, messages)) for _ in range(3)]
    print(f"replay of {len(pcm) / 8000:.1f} s of audio: median {statistics.median(runs):.2f} s "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)}), {len(pcm) / 8000 / statistics.median(runs):.0f}x real time")
    print("target: < 2.00 s ->", "OK" if statistics.median(runs) < 2.0 else "MISSED")


if __name__ == "__main__":
    main()
