"""The corpus build driver: every call of a seed over worker processes (resumable, retried), then the
index files: labels.csv, meta.jsonl, corpus.json and eval/ (held-out test calls + held-out real greetings).

Why apart: running and writing many calls is a different concern from making one; every call depends on
(seed, index) alone, so the corpus does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from amd_model.tools.corpus import greetings
from amd_model.tools.corpus.audio import SR, read_wav, speech_bounds, write_wav
from amd_model.tools.corpus.calls import CHANNELS, REAL_POOLS, build_call
from amd_model.tools.corpus.system_tools import (
    APT_PACKAGES,
    DEFAULT_ENGINES,
    ENGINE_WEIGHTS,
    ESPEAK_LANGS,
    FLITE_VOICES,
    engine_voices,
    ensure_tools,
)


def _worker(args: tuple[int, int, str, dict[str, bool], str, str]) -> tuple[int, dict, str]:
    index, seed, out_dir, tools, real_pool, channel = args
    name = f"calls/{index:06d}.wav"
    done = Path(out_dir) / f"calls/{index:06d}.json"
    if done.exists() and (Path(out_dir) / name).exists():  # resume an interrupted build
        return index, json.loads(done.read_text()), name
    err: Exception | None = None
    for attempt in range(3):  # a generator bug must not kill a 40-minute build; retry is deterministic too
        try:
            with tempfile.TemporaryDirectory(prefix="cg_corpus_") as td:
                pcm, meta = build_call(index, seed, tools, Path(td), attempt, real_pool, channel)
            break
        except Exception as e:  # noqa: BLE001
            err = e
            print(f"call {index} attempt {attempt}: {type(e).__name__}: {e}", file=sys.stderr)
    else:
        raise RuntimeError(f"call {index} failed 3 times") from err
    write_wav(Path(out_dir) / name, pcm.astype(np.float32) / 32767.0)
    meta["file"] = name
    meta["sha1"] = hashlib.sha1(pcm.tobytes()).hexdigest()
    done.write_text(json.dumps(meta))
    return index, meta, name


def build(
    out: Path,
    n: int,
    seed: int,
    workers: int = 2,
    progress: bool = True,
    real_pool: str = "split",
    channel: str = "v1",
    engines: Sequence[str] | None = None,
) -> list[dict]:
    """Build `n` calls into `out` (labels.csv, meta.jsonl, calls/, eval/). Returns metas in index order.

    `real_pool` as in build_call; with "all" no real greeting is held out, so eval/ gets none. `engines`
    names the TTS engines to draw voices from ("all": every one installed; default DEFAULT_ENGINES, those
    installed): a seed gives the same calls only with the same engine set, so `--engines espeak-ng,flite`
    rebuilds the corpora of 1.3.0 / 1.4.0."""
    if real_pool not in REAL_POOLS:
        raise ValueError(f"real_pool must be one of {REAL_POOLS}")
    every = engines is not None and "all" in engines
    tools = ensure_tools(added=tuple(ENGINE_WEIGHTS) if every else tuple(engines or ()))
    if engines is None or every:
        pool = DEFAULT_ENGINES if engines is None else tuple(ENGINE_WEIGHTS)
        engines = [e for e in pool if tools.get(e)]
    for need in ("espeak-ng", "flite", "sox"):
        if not tools.get(need):
            raise RuntimeError(f"{need} is required (apt-get install -y {' '.join(APT_PACKAGES)})")
    unknown = sorted(set(engines) - set(ENGINE_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)}; known: {', '.join(ENGINE_WEIGHTS)}, or all")
    missing = [e for e in engines if not tools.get(e)]
    if missing:
        raise RuntimeError(f"TTS engine(s) not installed: {', '.join(missing)}")
    tools = {k: (v if k not in ENGINE_WEIGHTS else k in engines) for k, v in tools.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "calls").mkdir(exist_ok=True)
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    jobs = [(i, seed, str(out), tools, real_pool, channel) for i in range(n)]
    metas: list[dict | None] = [None] * n
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=n, desc="corpus", unit="call", disable=not progress) if tqdm else None
    if workers <= 1:
        it = map(_worker, jobs)
        for i, meta, _ in it:
            metas[i] = meta
            if bar:
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for i, meta, _ in ex.map(_worker, jobs, chunksize=4):
                metas[i] = meta
                if bar:
                    bar.update()
    if bar:
        bar.close()
    done = [m for m in metas if m is not None]
    _write_index(out, done, seed, real_pool, channel, engine_set(tools))
    return done


def engine_set(tools: dict[str, bool]) -> dict[str, list[str]]:
    """The TTS engines a build drew from and their voices (espeak-ng: its accents): a seed reproduces a
    corpus only with the same set, so corpus.json records it."""
    fixed = {"espeak-ng": sorted(set(ESPEAK_LANGS)), "flite": list(FLITE_VOICES)}
    return {e: fixed.get(e) or list(engine_voices(e)) for e in ENGINE_WEIGHTS if tools.get(e)}


def _write_index(
    out: Path,
    metas: list[dict],
    seed: int,
    real_pool: str = "split",
    channel: str = "v1",
    engines: dict[str, list[str]] | None = None,
) -> None:
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "beep_onset_ms", "split", "subtype"])
        for m in metas:
            w.writerow(
                [
                    m["file"],
                    m["label"],
                    "" if m["beep_onset_ms"] is None else m["beep_onset_ms"],
                    m["split"],
                    m["subtype"],
                ]
            )
    with open(out / "meta.jsonl", "w") as f:
        for m in metas:
            f.write(json.dumps(m) + "\n")
    # eval/: held-out test calls + held-out real dev greetings (copied outside the repo only)
    ev = out / "eval"
    if ev.exists():
        shutil.rmtree(ev)
    ev.mkdir()
    rows = []
    with open(ev / "meta.jsonl", "w") as fm:
        for m in metas:
            if m["split"] != "test":
                continue
            name = Path(m["file"]).name
            shutil.copyfile(out / m["file"], ev / name)
            rows.append(
                [name, m["label"], "" if m["beep_onset_ms"] is None else m["beep_onset_ms"], m["subtype"]]
            )
            fm.write(json.dumps({**m, "file": name}) + "\n")
        _, held = greetings.dev_greetings()
        for f in held if real_pool == "split" else []:
            name = f"dev_{f.name}"
            shutil.copyfile(f, ev / name)
            rows.append([name, "machine", "", "dev_greeting"])
            x = read_wav(f)
            b = speech_bounds(x)
            fm.write(
                json.dumps(
                    {
                        "file": name,
                        "label": "machine",
                        "subtype": "dev_greeting",
                        "speech_onset_ms": b[0] * 1000 // SR if b else None,
                        "first_utterance_end_ms": None,
                        "beep_onset_ms": None,
                        "split": "test",
                    }
                )
                + "\n"
            )
    with open(ev / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "beep_onset_ms", "subtype"])
        w.writerows(rows)
    crc = zlib.crc32("".join(m["sha1"] for m in metas).encode())
    summary = {"seed": seed, "n": len(metas), "real_pool": real_pool, "channel": channel, "crc": crc}
    if engines is not None:
        summary["engines"] = engines
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
