"""A scripted caller for `callgate simulate --script`: lines said in answer to the bot, or over it.

A script is a TOML (or JSON) file:

    voice = "en-us+f3"              # default espeak-ng voice ("flite:slt" for flite)
    [[step]]
    say = "Hi, can I move my appointment to Friday?"   # or wav = "line.wav" (relative to the script)
    after = "bot_done"              # bot_done (default): when the bot has stopped talking for gap_ms
    gap_ms = 600
    [[step]]
    say = "Wait, actually, make it Thursday."
    after = "bot_audio"             # barge in: at_ms of bot audio into the bot's next turn
    at_ms = 1200
    [[step]]
    say = "uh-huh"
    kind = "backchannel"            # line (default) | backchannel | noise (no words: a cough, a door)
    after = "bot_audio"
    at_ms = 900
    [[step]]
    noise = "cough"                 # instead of say/wav: cough | door (synthetic)
    after = "start"                 # at_ms after the call starts

Every step waits for the one before it to finish. `transcript` (default: the `say` text, '' for
noise) is what the caller "really said", for an STT stand-in that is told the lines in advance.
Text is synthesized offline (callgate/synth.py: espeak-ng or flite) through a telephone channel.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from callgate.audio import FRAME_SAMPLES, load_audio, to_int16

AFTER = ("bot_done", "bot_audio", "start")
STEP_TIMEOUT_MS = 30_000.0  # a step whose cue never comes is skipped after this long
KINDS = ("line", "backchannel", "noise")


class ScriptError(ValueError):
    """A script that cannot be used (the message says why)."""


@dataclass
class Step:
    kind: str = "line"
    say: str | None = None
    wav: Path | None = None
    noise: str | None = None
    voice: str | None = None
    after: str = "bot_done"
    gap_ms: float = 600.0
    at_ms: float = 0.0
    transcript: str = ""
    hangup: bool = False  # the caller hangs up when this step comes due (nothing is said)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # int16, 8 kHz

    @property
    def label(self) -> str:
        return self.say or (self.wav.name if self.wav else self.noise or "")


@dataclass
class Script:
    steps: list[Step]
    tail_ms: float = 3000.0


def load_script(path: Path | str, *, synthesize: bool = True) -> Script:
    """Parse and check a script file; `synthesize` renders every step's audio now (offline TTS)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScriptError(f"cannot read script {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ScriptError(f"script {path.name} is not valid {kind}: {e}") from None
    return parse_script(data, base=path.parent, synthesize=synthesize)


def parse_script(data: dict[str, Any], *, base: Path = Path("."), synthesize: bool = True) -> Script:
    if not isinstance(data, dict) or not isinstance(data.get("step"), list) or not data["step"]:
        raise ScriptError("a script needs at least one [[step]]")
    voice = data.get("voice")
    steps = []
    for i, raw in enumerate(data["step"], start=1):
        if not isinstance(raw, dict):
            raise ScriptError(f"step {i} must be a table")
        keys = {"say", "wav", "noise", "voice", "after", "gap_ms", "at_ms", "kind", "transcript", "hangup"}
        unknown = set(raw) - keys
        if unknown:
            raise ScriptError(f"step {i}: unknown keys {', '.join(sorted(unknown))}")
        sources = [k for k in ("say", "wav", "noise") if raw.get(k)]
        if len(sources) != 1 and not (raw.get("hangup") and not sources):
            raise ScriptError(f"step {i}: give exactly one of say, wav, noise (or hangup = true)")
        kind = raw.get("kind", "noise" if raw.get("noise") else "line")
        after = raw.get("after", "bot_done")
        if kind not in KINDS:
            raise ScriptError(f"step {i}: kind must be one of {', '.join(KINDS)}")
        if after not in AFTER:
            raise ScriptError(f"step {i}: after must be one of {', '.join(AFTER)}")
        try:
            gap, at = float(raw.get("gap_ms", 600)), float(raw.get("at_ms", 0))
        except (TypeError, ValueError):
            raise ScriptError(f"step {i}: gap_ms and at_ms must be numbers") from None
        if gap < 0 or at < 0:
            raise ScriptError(f"step {i}: gap_ms and at_ms must be >= 0")
        step = Step(
            kind=kind,
            say=raw.get("say"),
            wav=(base / raw["wav"]) if raw.get("wav") else None,
            noise=raw.get("noise"),
            voice=raw.get("voice", voice),
            after=after,
            gap_ms=gap,
            at_ms=at,
            transcript=raw.get("transcript", raw.get("say") or ""),
            hangup=bool(raw.get("hangup", False)),
        )
        if step.noise and step.noise not in NOISES:
            raise ScriptError(f"step {i}: noise must be one of {', '.join(NOISES)}")
        if synthesize and not step.hangup:
            step.audio = render(step)
        steps.append(step)
    return Script(steps=steps, tail_ms=float(data.get("tail_ms", 3000)))


def _cough(seed: int = 0) -> np.ndarray:
    from callgate import synth

    rng = np.random.default_rng(seed)
    burst = synth.pink_noise(0.22, rms=0.12, seed=seed) * np.exp(-np.linspace(0, 5, 1760)).astype(np.float32)
    return synth.concat(burst, synth.silence(0.06), 0.6 * burst[: 1200] * float(rng.uniform(0.8, 1.0)))


def _door(seed: int = 0) -> np.ndarray:
    from callgate import synth

    n = 1200
    return (synth.white_noise(n / 8000, rms=0.3, seed=seed) * np.exp(-np.linspace(0, 9, n))).astype(np.float32)


NOISES = {"cough": _cough, "door": _door}


def render(step: Step) -> np.ndarray:
    """The step's audio: int16, 8 kHz, whole 20 ms frames, through a telephone channel."""
    from callgate import synth

    if step.wav is not None:
        try:
            x = load_audio(step.wav)
        except (OSError, ValueError) as e:
            raise ScriptError(f"cannot load {step.wav}: {e}") from None
        pcm = np.asarray(x, dtype=np.int16)
    elif step.noise:
        pcm = to_int16(synth.telephone_channel(NOISES[step.noise]()))
    else:
        voice = step.voice or "en-us"
        engine, _, name = voice.partition(":") if voice.startswith("flite:") else ("espeak-ng", "", voice)
        try:
            x = synth.speech(step.say or "", voice=name or None, engine=engine)
        except RuntimeError as e:
            raise ScriptError(str(e)) from None
        x = x * (0.5 / (np.max(np.abs(x)) + 1e-9))
        pcm = to_int16(synth.telephone_channel(_trim(x)))
    pad = (-len(pcm)) % FRAME_SAMPLES
    return np.concatenate([pcm, np.zeros(pad, np.int16)])


def _trim(x: np.ndarray) -> np.ndarray:
    """Drop the TTS's leading and trailing silence, so a step starts speaking when it starts."""
    on = np.nonzero(np.abs(x) > 0.02)[0]
    return x[max(0, on[0] - 80) : on[-1] + 160] if len(on) else x


class ScriptedCaller:
    """Runs a Script on the call clock: which 20 ms frame the caller sends next (plain logic).

    `bot_playing` is the simulator's playback model (Twilio's buffer): True while bot audio plays.
    A step's clock starts when the step before it has been said; `bot_done` waits for bot audio to
    start and then stay silent for gap_ms, `bot_audio` for at_ms of bot audio played.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.index = 0
        self._pos: int | None = None  # sample position inside the current step's audio
        self._line_start = 0.0
        self._armed_ms = 0.0  # when the current step started waiting
        self._bot_start: float | None = None
        self._idle_since: float | None = None
        self._bot_played = 0.0
        self.lines: list[dict[str, Any]] = []
        self.hung_up = False
        self._last_bot_ms = 0.0
        self._prev_playing = False

    @property
    def done(self) -> bool:
        return self.hung_up or (self.index >= len(self.script.steps) and self._pos is None)

    @property
    def speaking(self) -> bool:
        return self._pos is not None

    def next_frame(self, now_ms: float, bot_playing: bool) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """The frame to send at `now_ms` (None: silence) and a `caller_line` event when a line ended."""
        if self._pos is None:
            self._track_bot(now_ms, bot_playing)
            if self.index < len(self.script.steps) and now_ms - self._armed_ms > STEP_TIMEOUT_MS:
                skipped = {"event": "caller_step_skipped", "t_ms": round(now_ms), "step": self.index + 1}
                self.index += 1  # the bot never gave the cue (hung up, or stopped for good)
                self._armed_ms = now_ms
                return None, skipped
            if self.index < len(self.script.steps) and self._triggered(self.script.steps[self.index], now_ms):
                if self.script.steps[self.index].hangup:
                    self.hung_up = True
                    return None, None
                self._pos, self._line_start = 0, now_ms
        if self._pos is None:
            return None, None
        step = self.script.steps[self.index]
        frame = step.audio[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if self._pos < len(step.audio):
            return frame, None
        end = now_ms + len(frame) / 8
        event = {
            "event": "caller_line",
            "t_ms": round(end),
            "step": self.index + 1,
            "kind": step.kind,
            "text": step.label,
            "start_ms": round(self._line_start),
            "end_ms": round(end),
            "over_bot": step.after == "bot_audio",
        }
        self.lines.append(event)
        self.index += 1
        self._pos = None
        self._armed_ms = end
        self._bot_start = self._idle_since = None
        self._bot_played = 0.0
        return frame, event

    def _track_bot(self, now_ms: float, playing: bool) -> None:
        if self._prev_playing and self._bot_start is not None:
            self._bot_played += FRAME_SAMPLES / 8  # the 20 ms before now played bot audio
        self._prev_playing = playing
        if playing:
            self._last_bot_ms = now_ms
            if self._bot_start is None:
                self._bot_start = now_ms
            self._idle_since = None
        elif self._bot_start is not None and self._idle_since is None:
            self._idle_since = now_ms

    def _triggered(self, step: Step, now_ms: float) -> bool:
        if step.after == "start":
            return now_ms >= step.at_ms
        if step.after == "bot_audio":
            return self._bot_start is not None and self._bot_played >= step.at_ms
        return self._idle_since is not None and now_ms - self._idle_since >= step.gap_ms

    def idle_for(self, now_ms: float, bot_playing: bool) -> float:
        """How long the line has been quiet on both sides (for ending the call after the script)."""
        if bot_playing:
            self._last_bot_ms = now_ms
            return 0.0
        return now_ms - max(self._armed_ms, self._last_bot_ms)

