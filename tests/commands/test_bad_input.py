"""A new user's mistakes (a file where a folder goes and the reverse, a half-written labels file, a port
out of range, a zero speed) get one clear `callgate SUB: error:` line and exit status 2, never a
traceback; and where the command would run for long, before it starts."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from callgate.audio import save_wav
from callgate.cli import main


def _wav(path):
    return save_wav(path, (np.random.default_rng(0).normal(0, 1000, 4000)).astype(np.int16))


def _one_error_line(capsys, command: str, needle: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("callgate ")]
    assert len(err) == 1 and err[0].startswith(f"callgate {command}: error:") and needle in err[0], err


def test_eval_turns_on_labels_missing_a_field_says_so_without_a_traceback(tmp_path, capsys) -> None:
    _wav(tmp_path / "a.wav")  # hand-written labels without duration_ms, pauses or segments
    (tmp_path / "labels.json").write_text(json.dumps({"files": {"a.wav": {"turns": [{"start_ms": 0, "end_ms": 300}]}}}))
    assert main(["eval-turns", str(tmp_path), "--systems", "timer_800ms", "--no-text"]) == 2
    _one_error_line(capsys, "eval-turns", "malformed labels")


def test_eval_turns_and_eval_with_a_folder_as_presets_say_so_without_a_traceback(tmp_path, capsys) -> None:
    (tmp_path / "labels.json").write_text('{"files": {}}')
    assert main(["eval-turns", str(tmp_path), "--presets", str(tmp_path)]) == 2
    _one_error_line(capsys, "eval-turns", "is a folder")
    _wav(tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("file,label\na.wav,human\n")
    assert main(["eval", str(tmp_path), "--no-real", "--no-progress", "--presets", str(tmp_path)]) == 2
    _one_error_line(capsys, "eval", "is a folder")


def test_eval_with_a_file_as_traces_folder_says_so_without_a_traceback(tmp_path, capsys) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("file,label\na.wav,human\n")
    assert main(["eval", str(tmp_path), "--no-real", "--no-progress", "--traces", str(tmp_path / "a.wav")]) == 2
    _one_error_line(capsys, "eval", "not a directory")


def test_tune_with_a_folder_as_out_says_so_before_tuning(tmp_path, capsys) -> None:
    pytest.importorskip("optuna")
    from amd_model.traces import Trace, save_trace

    steps = [[100.0 * k, 0.9, 0.04, 0.03, 0.02, 0.01] for k in range(1, 6)]
    classes = ["none", "human", "machine", "ivr", "carrier_intercept"]
    save_trace(Trace(call_id="a", classes=classes, steps=steps, label="human"), tmp_path / "traces")
    out = tmp_path / "presets"
    out.mkdir()
    assert main(["tune", str(tmp_path / "traces"), "--workflow", "default", "--trials", "1", "--out", str(out)]) == 2
    _one_error_line(capsys, "tune", "a folder")
    assert "Pareto" not in capsys.readouterr().out


def test_corpus_build_into_a_file_says_so_without_a_traceback(tmp_path, capsys) -> None:
    (tmp_path / "corpus").write_text("")
    assert main(["corpus", "build", "--out", str(tmp_path / "corpus"), "--n", "1", "--no-progress"]) == 2
    _one_error_line(capsys, "corpus", "not a directory")


def test_train_on_a_file_or_a_missing_corpus_says_so_without_a_traceback(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    (tmp_path / "corpus").write_text("")
    assert main(["train", "--corpus", str(tmp_path / "corpus"), "--n", "1"]) == 2
    _one_error_line(capsys, "train", "not a directory")
    assert main(["train", "--corpus", str(tmp_path / "nope"), "--eval-only"]) == 2
    _one_error_line(capsys, "train", "no eval/meta.jsonl")
    (tmp_path / "c" / "eval").mkdir(parents=True)
    (tmp_path / "c" / "eval" / "meta.jsonl").write_text('{"file": "a.wav"}\n')
    assert main(["train", "--corpus", str(tmp_path / "c"), "--eval-only", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "train", "AMD model not found")


def test_train_refuses_zero_members_before_building_a_corpus(tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("torch")
    from amd_model.tools import corpus

    def no_build(*_a, **_k):
        raise AssertionError("the corpus build started before the options were checked")

    monkeypatch.setattr(corpus, "build", no_build)
    assert main(["train", "--corpus", str(tmp_path / "new"), "--members", "0"]) == 2
    _one_error_line(capsys, "train", "--members")
    assert main(["train", "--corpus", str(tmp_path / "new"), "--n", "0"]) == 2
    _one_error_line(capsys, "train", "--n")


async def test_simulate_with_a_port_out_of_range_or_a_folder_to_save_says_so_without_a_traceback(
    tmp_path, capsys
) -> None:
    wav = str(_wav(tmp_path / "in.wav"))
    cases = [
        ([wav, "--url", "http://127.0.0.1:99999", "--fast"], "server URL"),
        ([wav, "--url", "http://[::1", "--fast"], "server URL"),
        ([wav, "--url", "http://127.0.0.1:9", "--fast", "--rest-port", "70000"], "--rest-port"),
        ([wav, "--url", "http://127.0.0.1:9", "--fast", "--save-received", str(tmp_path)], "a folder"),
    ]
    for argv, needle in cases:
        assert await asyncio.to_thread(main, ["simulate", *argv]) == 2, argv
        _one_error_line(capsys, "simulate", needle)


def test_demo_refuses_a_zero_speed_or_a_bad_port_before_generating_audio(capsys, monkeypatch) -> None:
    from callgate.commands import demo

    def no_audio():
        raise AssertionError("audio generated before the options were checked")

    monkeypatch.setattr(demo, "build_scenarios", no_audio)
    for argv, needle in ((["--speed", "0"], "--speed"), (["--port", "99999"], "--port"), (["--port", "-1"], "--port")):
        assert main(["demo", *argv]) == 2
        _one_error_line(capsys, "demo", needle)


def test_serve_refuses_a_port_out_of_range(capsys, monkeypatch) -> None:
    from callgate.commands import serve

    started = []
    monkeypatch.setattr(serve, "serve_worker", lambda settings, sockets=None: started.append(settings.port))
    for port in ("99999", "-1"):
        assert main(["serve", "--port", port, "--workers", "1"]) == 2
        _one_error_line(capsys, "serve", "port")
    assert started == []


def test_campaign_run_on_a_binary_contacts_file_says_so_without_a_traceback(tmp_path, capsys) -> None:
    wav = _wav(tmp_path / "contacts.wav")
    db = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    assert main(["campaign", "run", str(wav), "--database-url", db, "--no-wait", "--quiet"]) == 2
    _one_error_line(capsys, "campaign", "not a UTF-8 CSV file")


def test_replay_refuses_a_negative_tail_before_replaying(tmp_path, capsys, monkeypatch) -> None:
    from pipelines import replay

    def no_replay(*_a, **_k):
        raise AssertionError("replayed before the options were checked")

    monkeypatch.setattr(replay, "replay_pcm", no_replay)
    assert main(["replay", str(_wav(tmp_path / "a.wav")), "--tail", "-5"]) == 2
    _one_error_line(capsys, "replay", "--tail")


def test_replay_of_a_folder_says_it_is_a_folder(tmp_path, capsys) -> None:
    assert main(["replay", str(tmp_path)]) == 2
    _one_error_line(capsys, "replay", "a folder, not an audio file")


def test_eval_error_messages_keep_their_closing_quote(tmp_path, capsys) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("name,kind\na.wav,human\n")
    assert main(["eval", str(tmp_path), "--no-real", "--no-progress"]) == 2
    _one_error_line(capsys, "eval", "at least 'file' and 'label'")


def test_eval_refuses_zero_or_negative_jobs_before_evaluating(tmp_path, capsys, monkeypatch) -> None:
    from amd_model.tools import evaluation

    def no_eval(*_a, **_k):
        raise AssertionError("evaluated before the options were checked")

    monkeypatch.setattr(evaluation, "evaluate_dir", no_eval)
    _wav(tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("file,label\na.wav,human\n")
    for jobs in ("0", "-2"):
        assert main(["eval", str(tmp_path), "--no-real", "--no-progress", "--jobs", jobs]) == 2
        _one_error_line(capsys, "eval", "--jobs")


def test_eval_report_without_folds_writes_the_printed_table(tmp_path, capsys, monkeypatch) -> None:
    from amd_model.tools import evaluation

    monkeypatch.setattr(evaluation, "evaluate_dir", lambda *_a, **_k: {"n": 1})
    monkeypatch.setattr(evaluation, "format_report", lambda rep: f"the table of {rep['n']} call")
    _wav(tmp_path / "a.wav")
    (tmp_path / "labels.csv").write_text("file,label\na.wav,human\n")
    report = tmp_path / "report.txt"
    assert main(["eval", str(tmp_path), "--no-real", "--no-progress", "--report", str(report)]) == 0
    assert "the table of 1 call" in capsys.readouterr().out
    assert report.read_text() == "the table of 1 call\n"


def _one_trace(folder) -> None:
    from amd_model.traces import Trace, save_trace

    steps = [[100.0 * k, 0.9, 0.04, 0.03, 0.02, 0.01] for k in range(1, 6)]
    classes = ["none", "human", "machine", "ivr", "carrier_intercept"]
    save_trace(Trace(call_id="a", classes=classes, steps=steps, label="human"), folder)


def test_tune_on_a_traces_file_that_is_not_json_names_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "traces" / "b.json"
    bad.parent.mkdir()
    bad.write_text("not json")
    out = str(tmp_path / "presets.json")
    for traces in (bad, bad.parent):
        assert main(["tune", str(traces), "--workflow", "default", "--trials", "1", "--out", out]) == 2
        _one_error_line(capsys, "tune", f"{bad}: not valid JSON")


def _no_tune(monkeypatch) -> None:
    from amd_model.tools import tuning

    def no_tune(*_a, **_k):
        raise AssertionError("tuning started before the options were checked")

    monkeypatch.setattr(tuning, "tune", no_tune)


@pytest.mark.parametrize(("option", "values"), [("--population", ("0", "1", "-3")), ("--bound", ("-1", "0", "1.5"))])
def test_tune_refuses_a_population_under_two_or_a_bound_outside_0_1_before_tuning(
    tmp_path, capsys, monkeypatch, option: str, values: tuple[str, ...]
) -> None:
    _no_tune(monkeypatch)
    _one_trace(tmp_path / "traces")
    argv = ["tune", str(tmp_path / "traces"), "--workflow", "power_dial", "--trials", "1", "--dry-run"]
    for value in values:
        assert main([*argv, option, value]) == 2, value
        _one_error_line(capsys, "tune", option)


def test_tune_plot_without_a_suffix_reports_the_png_it_wrote(tmp_path, capsys) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("matplotlib")
    _one_trace(tmp_path / "traces")
    plot = tmp_path / "tradeoff"
    argv = ["tune", str(tmp_path / "traces"), "--workflow", "default", "--trials", "1", "--dry-run"]
    assert main([*argv, "--plot", str(plot)]) == 0
    assert f"plot saved to {plot}.png\n" in capsys.readouterr().out
    assert (tmp_path / "tradeoff.png").is_file()


def _campaign_run_argv(tmp_path, monkeypatch) -> list[str]:
    """`campaign run` on one contact, with the campaign's start replaced by a failure."""
    from callgate.store import campaigns

    async def no_campaign(*_a, **_k):
        raise AssertionError("the campaign started before the options were checked")

    monkeypatch.setattr(campaigns, "create_or_resume", no_campaign)
    (tmp_path / "contacts.csv").write_text("phone\n+14155550100\n")
    return ["campaign", "run", str(tmp_path / "contacts.csv"), "--server", "http://127.0.0.1:9",
            "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", "--no-wait", "--quiet"]


def test_campaign_run_refuses_an_unknown_workflow_before_calling(tmp_path, capsys, monkeypatch) -> None:
    assert main([*_campaign_run_argv(tmp_path, monkeypatch), "--workflow", "voicemail"]) == 2
    _one_error_line(capsys, "campaign", "unknown workflow 'voicemail'; choose one of: agent, ")


def test_campaign_run_refuses_a_zero_call_timeout_before_calling(tmp_path, capsys, monkeypatch) -> None:
    argv = _campaign_run_argv(tmp_path, monkeypatch)
    for timeout in ("0", "0m"):
        assert main([*argv, "--call-timeout", timeout]) == 2, timeout
        _one_error_line(capsys, "campaign", "--call-timeout")
