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
