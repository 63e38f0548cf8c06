"""The call factory: start-up warm-up loads the models that calls share."""

from __future__ import annotations

from callgate.settings import get_settings
from pipelines.factory import warm_up
from pipelines.message import MessageCache
from processors.endpointer import shared_text_model
from processors.interruption import shipped_cue


def test_warm_up_loads_the_conversation_models_every_call_shares(tmp_path, monkeypatch):
    import processors.endpointer as endpointer

    shared_text_model.cache_clear()
    shipped_cue.cache_clear()
    monkeypatch.setattr(endpointer, "_SMART_TURN", None)
    warm_up(get_settings(), MessageCache(tmp_path))
    assert shared_text_model.cache_info().currsize == 1 and shipped_cue.cache_info().currsize == 1
    assert endpointer._SMART_TURN is not None and endpointer._SMART_TURN.float_softmax


def test_warm_up_builds_whichever_agent_the_folder_has_and_skips_an_empty_one(tmp_path, monkeypatch):
    example = get_settings().agents_dir / "example.toml"
    folder = tmp_path / "agents"
    folder.mkdir()
    monkeypatch.setenv("AGENTS_DIR", str(folder))
    get_settings.cache_clear()
    try:
        warm_up(get_settings(), MessageCache(tmp_path))  # nothing to build: no error
        (folder / "front_desk.toml").write_text(example.read_text())
        shipped_cue.cache_clear()
        warm_up(get_settings(), MessageCache(tmp_path))
        assert shipped_cue.cache_info().currsize == 1
    finally:
        get_settings.cache_clear()


def test_every_workflow_name_has_a_builder_and_checking_a_name_loads_no_pipecat():
    import subprocess
    import sys

    from pipelines.factory import WORKFLOWS
    from pipelines.workflow_names import WORKFLOW_NAMES

    assert sorted(WORKFLOWS) == sorted(WORKFLOW_NAMES)
    probe = ("import sys; from pipelines.workflow_names import check_workflow; check_workflow('agent'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipecat', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
