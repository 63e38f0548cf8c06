"""Scripted callers: the script format's checks, and when each step speaks on the call clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.script import ScriptedCaller, ScriptError, load_script, parse_script

EXAMPLE = Path(__file__).resolve().parents[2] / "simulator" / "example_caller.toml"


def test_shipped_example_script_loads():
    script = load_script(EXAMPLE, synthesize=False)
    assert [s.kind for s in script.steps] == ["line", "backchannel", "line", "line"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "at least one"),
        ({"step": [{"say": "hi", "wav": "x.wav"}]}, "exactly one"),
        ({"step": [{"say": "hi", "after": "later"}]}, "after must be"),
        ({"step": [{"say": "hi", "gap_ms": -1}]}, ">= 0"),
        ({"step": [{"say": "hi", "colour": "red"}]}, "unknown keys"),
        ({"step": [{"noise": "trumpet"}]}, "noise must be"),
    ],
)
def test_bad_scripts_say_why(data, message):
    with pytest.raises(ScriptError, match=message):
        parse_script(data, synthesize=False)


def test_steps_follow_the_bot_on_the_call_clock():
    script = parse_script(
        {"step": [{"say": "a", "gap_ms": 200}, {"say": "b", "after": "bot_audio", "at_ms": 100}]}, synthesize=False
    )
    for step in script.steps:
        step.audio = np.ones(160 * 3, np.int16)  # 60 ms
    caller = ScriptedCaller(script)
    bot = {t: True for t in range(0, 400, 20)}  # the bot talks 0-400 ms, then again from 1000 ms
    bot.update({t: True for t in range(1000, 2000, 20)})
    said = []
    for t in range(0, 2000, 20):
        frame, line = caller.next_frame(float(t), bot.get(t, False))
        if frame is not None:
            said.append(t)
        if line:
            said.append(line["text"])
    # "a": 200 ms after the bot's audio ended (400 ms); "b": 100 ms into the bot's next audio
    assert said == [600, 620, 640, "a", 1100, 1120, 1140, "b"]
