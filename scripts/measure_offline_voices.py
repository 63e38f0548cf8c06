"""Measure the offline STT and TTS candidates (the no-keys default of the `agent` workflow) and print a table.

TTS candidates (voices that install from Debian, no download at run time): flite slt / kal / awb / rms and
espeak-ng. For each: synthesis latency per sentence (median, p95, real-time factor) and intelligibility as
the word error rate pocketsphinx makes on it after the telephone channel (300-3400 Hz, µ-law), the same
path a caller's phone takes. STT candidates: pocketsphinx (its English model ships inside the PyPI
wheel) on caller speech from several voices through the telephone channel: WER and decode latency.

Other STT candidates were looked at and rejected because their model is not in any PyPI wheel or Debian
package and would download at run time: vosk (model zip from its site), faster-whisper / whisper (Hugging
Face hub), moonshine-voice (its 0.1.5 wheel ships only the tokenizer, the weights download on first use),
sherpa-onnx (models from GitHub releases). Run: `python scripts/measure_offline_voices.py [--n 20]`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

from callgate import synth
from callgate.audio import SAMPLE_RATE, to_float, to_int16
from pipelines.services.offline_tts import LocalVoice
from pipelines.services.sphinx import PocketsphinxRecognizer

SENTENCES = [
    "Hi, this is Riley from Callgate Dental.",
    "Do you have a minute to talk about your appointment?",
    "Which day works best for you?",
    "Would morning or afternoon be better?",
    "Perfect, you are all set for Tuesday at ten.",
    "Is there anything else I can help you with?",
    "Thank you for your time. Goodbye!",
    "Of course, let me connect you with a person.",
    "I can move your cleaning to next week.",
    "Please call us back at your convenience.",
    "yes I can talk now",
    "can you call me back tomorrow morning",
    "I would like to talk to a person",
    "no thank you goodbye",
    "what time do you open on Saturday",
    "my name is John Smith",
    "I need to cancel my appointment",
    "the afternoon is better for me",
    "sorry I did not catch that",
    "that sounds good thank you",
]
CALLER_VOICES = [("flite", "kal"), ("flite", "slt"), ("flite", "awb"), ("flite", "rms"), ("espeak-ng", "en-us")]
TTS_CANDIDATES = [("flite", "slt"), ("flite", "kal"), ("flite", "awb"), ("flite", "rms"), ("espeak-ng", "en-us")]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    r, h = words(ref), words(hyp)
    d = np.arange(len(h) + 1)
    for i, rw in enumerate(r, 1):
        prev, d[0] = d.copy(), i
        for j, hw in enumerate(h, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (rw != hw))
    return int(d[len(h)]), len(r)


def phone(pcm: bytes) -> bytes:
    x = synth.concat(synth.silence(0.2), to_float(pcm), synth.silence(0.4))
    return to_int16(synth.telephone_channel(x)).tobytes()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=len(SENTENCES), help="sentences per candidate")
    args = ap.parse_args()
    texts = SENTENCES[: args.n]
    rec = PocketsphinxRecognizer()
    rec.transcribe(bytes(3200))  # load the model outside the timings

    print(f"TTS candidates ({len(texts)} sentences each; WER = pocketsphinx on the voice after the phone channel)")
    print(f"{'voice':18} {'median ms':>9} {'p95 ms':>7} {'RTF':>6} {'WER %':>6}  word times")
    for engine, voice in TTS_CANDIDATES:
        v = LocalVoice(engine=engine, voice=voice)
        lat, dur, errs, n = [], 0.0, 0, 0
        for t in texts:
            t0 = time.perf_counter()
            s = v.synthesize(t)
            lat.append((time.perf_counter() - t0) * 1000)
            dur += s.duration_secs
            e, k = wer(t, rec.transcribe(phone(s.pcm)))
            errs, n = errs + e, n + k
        rtf = sum(lat) / 1000 / dur
        timing = "phones (-psdur)" if engine == "flite" else "estimated"
        print(f"{engine + '/' + voice:18} {statistics.median(lat):9.0f} {pct(lat, 95):7.0f} {rtf:6.3f} {100 * errs / n:6.1f}  {timing}")

    print(f"\nSTT: pocketsphinx en-us (16 kHz model, 8 kHz audio upsampled), {len(texts)} utterances per caller voice")
    print(f"{'caller voice':18} {'WER %':>6} {'median ms':>9} {'p95 ms':>7} {'RTF':>6}")
    all_e = all_n = 0
    for engine, voice in CALLER_VOICES:
        lat, dur, errs, n = [], 0.0, 0, 0
        for t in texts:
            pcm = phone(to_int16(synth.speech(t, engine=engine, voice=voice)).tobytes())
            t0 = time.perf_counter()
            hyp = rec.transcribe(pcm)
            lat.append((time.perf_counter() - t0) * 1000)
            dur += len(pcm) / 2 / SAMPLE_RATE
            e, k = wer(t, hyp)
            errs, n = errs + e, n + k
        all_e, all_n = all_e + errs, all_n + n
        print(f"{engine + '/' + voice:18} {100 * errs / n:6.1f} {statistics.median(lat):9.0f} {pct(lat, 95):7.0f} {sum(lat) / 1000 / dur:6.3f}")
    print(f"{'all voices':18} {100 * all_e / all_n:6.1f}")


if __name__ == "__main__":
    main()
