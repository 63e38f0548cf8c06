"""An agent: the small TOML file that says who the voice agent is (prompt, voice, model, limits).

Agents are named by plain file name (`agent=example` or `agent=example.toml`) and resolved only inside
`settings.agents_dir`, like voicemail messages: a name can never reach a file outside that folder.
Unknown keys and wrong types are errors, so a typo in an agent file fails loudly at load time, not
in the middle of a call.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from callgate.settings import Settings

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AgentSpecError(ValueError):
    """An agent name or file that cannot be used (the message says why)."""


@dataclass
class AgentSpec:
    """Who the agent is. Empty `voice` / `llm_model` mean the settings' defaults for the vendor in use."""

    name: str = "agent"
    system_prompt: str = "You are a friendly, brief phone assistant. Answer in one or two short sentences."
    first_message: str = "Hello! This is the callgate assistant. How can I help you today?"
    greeting_first: bool = True
    voice: str = ""
    language: str = "en"
    llm_model: str = ""
    temperature: float = 0.6
    end_call_phrases: list[str] = field(default_factory=lambda: ["goodbye", "bye bye"])
    max_call_secs: float = 300.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise AgentSpecError(f"temperature must be within 0..2, got {self.temperature}")
        if self.max_call_secs <= 0:
            raise AgentSpecError(f"max_call_secs must be > 0, got {self.max_call_secs}")
        if not self.system_prompt.strip():
            raise AgentSpecError("system_prompt must not be empty")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], default_name: str = "agent") -> AgentSpec:
        """Build from a parsed TOML table, checking every key and type."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise AgentSpecError(f"unknown agent keys: {', '.join(unknown)} (known: {', '.join(known)})")
        values: dict[str, Any] = {"name": default_name}
        for key, value in data.items():
            values[key] = _check_type(key, value)
        return cls(**values)


_STR = {"name", "system_prompt", "first_message", "voice", "language", "llm_model"}
_NUM = {"temperature", "max_call_secs"}


def _check_type(key: str, value: Any) -> Any:
    if key in _STR:
        if not isinstance(value, str):
            raise AgentSpecError(f"{key} must be a string, got {type(value).__name__}")
        return value
    if key in _NUM:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AgentSpecError(f"{key} must be a number, got {type(value).__name__}")
        return float(value)
    if key == "greeting_first":
        if not isinstance(value, bool):
            raise AgentSpecError(f"greeting_first must be true or false, got {value!r}")
        return value
    if key == "end_call_phrases":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AgentSpecError("end_call_phrases must be a list of strings")
        return [v.strip().lower() for v in value if v.strip()]
    raise AgentSpecError(f"unknown agent key {key!r}")


def agent_names(settings: Settings) -> list[str]:
    """The agents settings.agents_dir holds (file stems, sorted; none if the folder is missing)."""
    folder = Path(settings.agents_dir).expanduser()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def agent_path(name: str, settings: Settings) -> Path:
    """The file an agent name refers to, inside settings.agents_dir (AgentSpecError otherwise)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise AgentSpecError(
            f"bad agent name {name!r}: use a plain file name (letters, digits, '_', '-', '.'), no folders"
        )
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    folder = Path(settings.agents_dir).expanduser().resolve()
    path = (folder / f"{stem}.toml").resolve()
    if path.parent != folder:
        raise AgentSpecError(f"agent {name!r} is outside the agents folder")
    if not path.is_file():
        have = agent_names(settings)
        raise AgentSpecError(f"no agent named {stem!r} in {folder} (have: {', '.join(have) or 'none'})")
    return path


def load_agent(name: str, settings: Settings) -> AgentSpec:
    """Load and check the agent file `name` from settings.agents_dir."""
    path = agent_path(name, settings)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise AgentSpecError(f"agent file {path.name} is not valid TOML: {e}") from e
    return AgentSpec.from_mapping(data, default_name=path.stem)
