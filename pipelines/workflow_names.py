"""The workflows a call can run, by name.

Why a module of its own: the server, `callgate replay` and `callgate campaign` check a name before
anything runs, and the campaign command only places calls through the server; importing the pipelines
for that would load Pipecat (and print its banner) in a process that never runs a pipeline.
pipelines/factory.py maps each name to its builder (tests/pipelines/test_factory.py keeps the two equal).
"""

from __future__ import annotations

WORKFLOW_NAMES: tuple[str, ...] = ("agent", "voicemail_drop", "parallel_dial", "power_dial")


class UnknownWorkflowError(ValueError):
    """The requested workflow does not exist."""


def check_workflow(name: str) -> str:
    if name not in WORKFLOW_NAMES:
        raise UnknownWorkflowError(f"unknown workflow {name!r}; choose one of: {', '.join(sorted(WORKFLOW_NAMES))}")
    return name
