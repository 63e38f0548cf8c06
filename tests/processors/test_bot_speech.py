"""The bot's playout ledger: paced release, word marks, and heard words from echo timing (audio time)."""

from __future__ import annotations

import numpy as np
import pytest

from processors.bot_speech import Clause, PlayoutLedger, word_spans
from simulator.playback import PlaybackBuffer


def tone_words(durations_ms: list[int], gap_ms: int = 0) -> np.ndarray:
    parts = []
    for d in durations_ms:
        t = np.arange(d * 8) / 8000
        parts += [(8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), np.zeros(gap_ms * 8, np.int16)]
    return np.concatenate(parts)


def test_word_spans_share_voiced_audio_by_characters_on_frame_boundaries():
    pcm = np.concatenate([np.zeros(800, np.int16), tone_words([1000])])  # 100 ms lead silence
    ends = word_spans(pcm, ["a", "bbbbbbb"])
    assert ends[-1] == len(pcm) / 8
    assert all(e % 20 == 0 for e in ends)
    assert 300 <= ends[0] <= 400  # 100 + 1000 * 2/10, rounded to 20 ms


def simulate(
    lead_ms: float, delay_ms: float, clear_at_ms: float | None, words: int = 8, word_ms: int = 300, pause_ms: float = 0
):
    """Play one clause through the ledger and a Twilio buffer `delay_ms` away (each way), 20 ms steps.

    Returns the ledger, the words really played (Twilio side) and the server's heard words.
    """
    led = PlayoutLedger(lead_ms=lead_ms)
    text = " ".join(f"w{i}" for i in range(words))
    led.add_clause(Clause(1, 0, text, pcm=bytearray(tone_words([word_ms] * words).tobytes())))
    led.turn(1).reply_done = True
    twilio: PlaybackBuffer[str] = PlaybackBuffer()
    to_twilio: list[tuple[float, str, object]] = []  # (arrival, kind, payload)
    to_server: list[tuple[float, str]] = []
    played_truth: list[str] = []
    cleared = False
    for step in range(0, 20000, 20):
        now = float(step)
        server_now = now - delay_ms  # the server's inbound audio clock lags Twilio's by the delay
        if server_now >= 0:
            for arr, name in [x for x in to_server if x[0] <= now]:
                to_server.remove((arr, name))
                led.echo(name, server_now)
            if clear_at_ms is not None and pause_ms and server_now >= clear_at_ms - pause_ms:
                led.pause(server_now)  # the barge-in analyzer pauses at the speech onset
            if clear_at_ms is not None and not cleared and server_now >= clear_at_ms:
                cleared = True
                led.clear(server_now)
                to_twilio.append((now + delay_ms, "clear", None))
            for kind, item in led.release(server_now):
                to_twilio.append((now + delay_ms, kind, item))
        while (name := twilio.pop_due(now)) is not None:  # audio that ended by now has played
            if name.split(":")[1].startswith("w"):
                played_truth.append(name.rsplit(":", 1)[1])
            to_server.append((now + delay_ms, name))
        for x in [x for x in to_twilio if x[0] <= now]:
            to_twilio.remove(x)
            arr, kind, item = x
            if kind == "audio":
                twilio.add_audio(now, len(item) / 16)
            elif kind == "mark":
                twilio.add_mark(now, item.name)
            else:
                for name in twilio.clear(now)[1]:
                    to_server.append((now + delay_ms, name))
    heard = led.turns[1].heard_words()
    return led, played_truth, heard


def test_uninterrupted_clause_plays_every_word_and_twilio_buffer_stays_short():
    led, truth, heard = simulate(lead_ms=60, delay_ms=150, clear_at_ms=None)
    assert truth == heard == [f"w{i}" for i in range(8)]
    assert led.turns[1].complete


@pytest.mark.parametrize("delay_ms", [0, 45, 150, 230])
def test_after_pause_and_clear_heard_words_match_what_twilio_played(delay_ms):
    for clear_at in range(600, 2400, 37):
        led, truth, heard = simulate(lead_ms=60, delay_ms=delay_ms, clear_at_ms=clear_at, pause_ms=150)
        assert heard == truth, (clear_at, heard, truth)
        assert led.turns[1].resolved


@pytest.mark.parametrize("delay_ms", [0, 150])
def test_clear_without_pause_is_never_more_than_one_word_off(delay_ms):
    misses = 0
    for clear_at in range(600, 2400, 37):
        led, truth, heard = simulate(lead_ms=60, delay_ms=delay_ms, clear_at_ms=clear_at)
        assert abs(len(heard) - len(truth)) <= 1 and heard[: len(truth)] == truth[: len(heard)]
        misses += heard != truth
    assert misses <= 0.2 * len(range(600, 2400, 37))  # only clears within the tolerance of a word's end


def test_server_clock_estimate_counts_words_that_had_only_started():
    led, truth, heard = simulate(lead_ms=60, delay_ms=150, clear_at_ms=1000)
    assert heard == truth
    assert len(led.turns[1].server_clock_words) >= len(truth)


def test_clause_streams_word_by_word_when_the_tts_gives_timestamps():
    led = PlayoutLedger()
    pcm = tone_words([200, 300, 250], gap_ms=40).tobytes()  # word k starts at k * (dur + 40 ms)
    starts_ms = [0, 240, 580]
    c = Clause(1, 0, "one two three")
    c.pcm += pcm[: 2 * 8 * 300]  # the first 300 ms of audio
    c.voiced_start_ms = 0.0
    c.word_pts = [10**9 + s * 10**6 for s in starts_ms[:2]]  # timestamps of words 1 and 2
    led.feed_clause(c, final=False)
    words = [m.word for m in led.turns[1].words()]
    assert words == ["one"]  # word 1 ends where word 2 starts (240 ms), and that audio is here
    c.pcm += pcm[2 * 8 * 300 :]
    c.word_pts.append(10**9 + starts_ms[2] * 10**6)
    led.feed_clause(c, final=True)
    marks = led.turns[1].words()
    assert [m.word for m in marks] == ["one", "two", "three"]
    assert [m.offset_ms for m in marks] == [240, 580, len(pcm) / 16]
    assert led.turns[1].marks[-1].kind == "c"
