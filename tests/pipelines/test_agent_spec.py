"""Agent files: the shipped example loads, names stay inside the agents folder, bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.settings import Settings
from pipelines.agent_spec import AgentSpec, AgentSpecError, load_agent


def settings(folder: Path | None = None) -> Settings:
    return Settings(_env_file=None, **({"agents_dir": folder} if folder else {}))


def test_the_shipped_example_loads_with_its_values():
    a = load_agent("example", settings())
    assert a.name == "example" and a.greeting_first is True
    assert "Riley" in a.first_message and "end_call" in a.system_prompt
    assert a.temperature == 0.6 and a.max_call_secs == 300.0 and "goodbye" in a.end_call_phrases
    assert load_agent("example.toml", settings()) == a


def test_missing_keys_take_the_defaults(tmp_path: Path):
    (tmp_path / "min.toml").write_text('system_prompt = "Be brief."\n')
    a = load_agent("min", settings(tmp_path))
    assert a == AgentSpec(name="min", system_prompt="Be brief.")


@pytest.mark.parametrize("name", ["../example", "/etc/passwd", "a/b", "..", ".hidden", "x" * 80, ""])
def test_names_cannot_leave_the_agents_folder(name: str):
    with pytest.raises(AgentSpecError, match="bad agent name"):
        load_agent(name, settings())


def test_an_unknown_agent_lists_the_ones_there(tmp_path: Path):
    (tmp_path / "sales.toml").write_text("")
    with pytest.raises(AgentSpecError, match="no agent named 'support'.*sales"):
        load_agent("support", settings(tmp_path))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('sytem_prompt = "typo"', "unknown agent keys: sytem_prompt"),
        ("temperature = 5", "temperature must be within"),
        ('temperature = "hot"', "temperature must be a number"),
        ('greeting_first = "yes"', "greeting_first must be true or false"),
        ("end_call_phrases = [1, 2]", "end_call_phrases must be a list of strings"),
        ("max_call_secs = 0", "max_call_secs must be > 0"),
        ('system_prompt = "  "', "system_prompt must not be empty"),
        ("this is = not toml", "not valid TOML"),
    ],
)
def test_bad_files_fail_with_a_clear_message(tmp_path: Path, body: str, message: str):
    (tmp_path / "bad.toml").write_text(body + "\n")
    with pytest.raises(AgentSpecError, match=message):
        load_agent("bad", settings(tmp_path))
