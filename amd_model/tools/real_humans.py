"""Real people answering: pickup-shaped calls from the only real human recordings that install offline.

Every real recording in the development data is a machine (the 38 greetings), so no figure so far
said what the AMD does with a *real* human voice; the model card's refit heads and scratch nets were
held back on a proxy for that (`real_voice_probe`: greetings cut short). This builds the direct test
from real read speech that Debian packages ship (not copied into the repository; installed with
apt-get where missing):

* `alsa-utils`: /usr/share/sounds/alsa/*.wav, one woman saying "Front left", "Rear center", ...;
* `pocketsphinx-testdata`: AN4 "cards" utterances ("ten of clubs"), goforward / numbers / something
  (16 kHz raw), and five LibriVox sentences read by one man (3-7 s: a person who talks on, the shape
  a business pickup has);
* `ktuberling-data`: KDE's word game, one short word ("ball", "patate") per file spoken by a native
  speaker in each of 22 languages (0.5-2 s: the length of a "hello?"); four words per language, a
  recording set each (sr and its script variants are one set).

Each utterance becomes calls the way a person answers: 0.2-0.9 s of open line, the utterance, then
quiet line (`single`); or the utterance, 1.2-2 s of waiting and a second utterance of the same
speaker (`double`: "hello? ... hello?"). The channel is the corpus's: a level, line noise at 15-40
dB SNR, the 300-3400 Hz band and a µ-law round trip. The output folder is a `callgate eval` folder
(labels.csv with label human, subtype real_short / real_long; meta.jsonl with the speech onset and
the first utterance's end), so the usual report, with app_amd beside, is the figure:

    python -m amd_model.tools.real_humans --out /tmp/real_humans [--seed 0] [--variants 3]
    callgate eval /tmp/real_humans --no-real [--workflow W]

28 recording sets of read speech (most of them one voice each), not conversational "hello?": a
floor under what real pickups do, not a measurement of them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amd_model.tools.corpus import apt_install, read_wav, trim, write_wav
from callgate import synth
from callgate.audio import SAMPLE_RATE, resample

ALSA = Path("/usr/share/sounds/alsa")
PS_TEST = Path("/usr/share/pocketsphinx/test/data")
KTUBERLING = Path("/usr/share/ktuberling/sounds")
PACKAGES = {"alsa-utils": ALSA, "pocketsphinx-testdata": PS_TEST, "ktuberling-data": KTUBERLING}
KT_PER_SET = 4  # words per ktuberling language (spread over its sorted files)
LONG_MS = 2500  # utterances longer than this are a person who talks on (subtype real_long)


@dataclass
class Utterance:
    """One real recording: float32 audio at 8 kHz, trimmed to its speech, and who speaks it."""

    name: str
    speaker: str
    audio: np.ndarray


def ensure_packages(install: bool = True) -> list[str]:
    """The Debian packages whose recordings are missing (installed first when running as root)."""
    missing = [pkg for pkg, path in PACKAGES.items() if not path.is_dir()]
    if install and apt_install(missing):
        return ensure_packages(install=False)
    return missing


def _raw16k(path: Path) -> np.ndarray:
    x = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
    return resample(x, 16000, SAMPLE_RATE)


def _any_audio(path: Path) -> np.ndarray:
    """An Ogg Vorbis or WAV file of any rate -> float32 mono at 8 kHz."""
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)


def ktuberling_sets(root: Path = KTUBERLING, per_set: int = KT_PER_SET) -> list[Utterance]:
    """`per_set` words of each language folder, evenly spread; `sr@latin` etc. repeat `sr`'s files."""
    out: list[Utterance] = []
    if not root.is_dir():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir() and "@" not in p.name):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".ogg", ".wav"))
        for f in files[:: max(1, len(files) // per_set)][:per_set]:
            out.append(Utterance(f"kt_{d.name}_{f.stem}", f"ktuberling_{d.name}", _any_audio(f)))
    return out


def collect() -> list[Utterance]:
    """Every usable utterance of the installed packages (the alsa 'Noise' file is not speech)."""
    out: list[Utterance] = []
    for p in sorted(ALSA.glob("*.wav")):
        if p.stem != "Noise":
            out.append(Utterance(f"alsa_{p.stem}", "alsa", read_wav(p)))
    for p in sorted((PS_TEST / "cards").glob("*.wav")):
        out.append(Utterance(f"an4_cards_{p.stem}", "an4_cards", read_wav(p)))
    for stem in ("goforward", "numbers", "something"):
        p = PS_TEST / f"{stem}.raw"
        if p.is_file():
            out.append(Utterance(f"ps_{stem}", f"ps_{stem}", _raw16k(p)))
    for p in sorted((PS_TEST / "librivox").glob("*.wav")):
        out.append(Utterance(f"librivox_{p.stem.rsplit('-', 1)[-1]}", "librivox", read_wav(p)))
    out += ktuberling_sets()
    for u in out:
        u.audio = trim(u.audio, -35.0)  # the speech: first to last 10 ms frame within 35 dB of the loudest
    return [u for u in out if u.audio.size > SAMPLE_RATE // 10]


def _quiet(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SAMPLE_RATE), dtype=np.float32)


def build_call(
    u: Utterance, partner: Utterance | None, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float | str]]:
    """A pickup: open line, the utterance (and, for a double, a wait and the partner), quiet line."""
    lead = float(rng.uniform(0.2, 0.9))
    parts = [_quiet(lead), u.audio]
    if partner is not None:
        parts += [_quiet(float(rng.uniform(1.2, 2.0))), partner.audio]
    parts.append(_quiet(8.0))
    x = np.concatenate(parts).astype(np.float64)
    speech_rms = float(np.sqrt(np.mean(np.square(u.audio, dtype=np.float64))) + 1e-9)
    x *= 10 ** (float(rng.uniform(-26, -12)) / 20) / speech_rms  # speech level -26..-12 dBFS
    snr = float(rng.uniform(15, 40))
    noise = synth.pink_noise(x.size / SAMPLE_RATE, rms=1.0, seed=int(rng.integers(1 << 30)))[: x.size]
    x = x + noise * 10 ** (float(rng.uniform(-26, -12)) / 20) * 10 ** (-snr / 20)
    y = synth.telephone_channel(np.clip(x, -1.0, 1.0), float(rng.uniform(250, 350)), float(rng.uniform(3200, 3500)))
    onset_ms = round(lead * 1000)
    meta: dict[str, float | str] = {
        "speech_onset_ms": onset_ms,
        "first_utterance_end_ms": onset_ms + round(u.audio.size * 1000 / SAMPLE_RATE),
        "snr_db": round(snr, 1),
    }
    return y, meta


def build(out: Path, seed: int = 0, variants: int = 3) -> list[dict]:
    """Write `variants` single and `variants` double pickups per utterance; returns their meta.jsonl rows."""
    utts = collect()
    if not utts:
        raise SystemExit(f"no real human recordings found: install {' '.join(PACKAGES)}")
    calls = out / "calls"
    calls.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, metas = [], []
    for u in utts:
        same = [v for v in utts if v.speaker == u.speaker and v is not u and v.audio.size <= u.audio.size * 2]
        for k in range(variants):
            for shape in ("single", "double"):
                partner = same[int(rng.integers(len(same)))] if shape == "double" and same else None
                if shape == "double" and partner is None:
                    continue
                y, meta = build_call(u, partner, rng)
                name = f"calls/{u.name}_{shape}_{k}.wav"
                write_wav(out / name, y)
                long = u.audio.size * 1000 / SAMPLE_RATE > LONG_MS
                sub = "real_long" if long else "real_short"
                rows.append(f"{name},human,,test,{sub}")
                metas.append({"file": name, "label": "human", "subtype": sub, "speaker": u.speaker,
                              "shape": shape, "split": "test", **meta})
    (out / "labels.csv").write_text("file,label,beep_onset_ms,split,subtype\n" + "\n".join(rows) + "\n")
    (out / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metas))
    speakers = sorted({u.speaker for u in utts})
    print(f"{len(rows)} calls from {len(utts)} utterances of {len(speakers)} recording sets "
          f"({', '.join(speakers)}) -> {out}")
    return metas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (a `callgate eval` folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int, default=3, help="channel variants per utterance and shape")
    args = ap.parse_args(argv)
    missing = ensure_packages()
    if missing:
        print(f"missing Debian packages: {' '.join(missing)} (apt-get install -y {' '.join(missing)})")
        return 2
    build(args.out, args.seed, args.variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
