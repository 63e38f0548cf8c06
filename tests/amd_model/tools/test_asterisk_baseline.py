"""The app_amd re-implementation on synthetic energy patterns, against the C code's branches."""

from __future__ import annotations

import numpy as np

from amd_model.tools.asterisk_baseline import (
    TWILIO_DEFAULTS,
    AsteriskAmd,
    AsteriskAmdConfig,
    run_asterisk_amd,
    twilio_answered_by,
)


def pattern(*parts: tuple[int, int]) -> np.ndarray:
    """[(duration_ms, mean |amplitude|)] -> int16 8 kHz audio (alternating sign, exact level)."""
    chunks = []
    for ms, amp in parts:
        n = ms * 8
        chunks.append((np.where(np.arange(n) % 2, 1, -1) * amp).astype(np.int16))
    return np.concatenate(chunks)


def test_short_word_then_silence_is_human_after_800ms() -> None:
    r = run_asterisk_amd(pattern((300, 0), (500, 3000), (2000, 0)))
    assert (r.status, r.label, r.t_ms) == ("HUMAN", "human", 300 + 500 + 800)
    assert r.cause == "HUMAN-800-800"


def test_long_greeting_is_machine() -> None:
    r = run_asterisk_amd(pattern((300, 0), (3000, 3000)))
    assert (r.status, r.label, r.t_ms) == ("MACHINE", "machine", 300 + 1500)
    assert r.cause.startswith("LONGGREETING-1500")


def test_initial_silence_is_machine_at_2500ms() -> None:
    r = run_asterisk_amd(pattern((4000, 10)))
    assert (r.status, r.t_ms, r.cause) == ("MACHINE", 2500, "INITIALSILENCE-2500-2500")


def test_third_word_is_machine() -> None:
    # three 200 ms words with 100 ms gaps (>= 50 ms between-words silence, < 800 ms): MAXWORDS on word 3
    r = run_asterisk_amd(
        pattern((200, 0), (200, 2000), (100, 0), (200, 2000), (100, 0), (200, 2000), (1000, 0))
    )
    assert r.status == "MACHINE" and r.cause == "MAXWORDS-3-2"
    assert r.t_ms == 200 + 200 + 100 + 200 + 100 + 100  # counted once the 3rd word has 100 ms of voice


def test_two_words_then_silence_is_human() -> None:
    r = run_asterisk_amd(pattern((200, 0), (200, 2000), (100, 0), (200, 2000), (1000, 0)))
    assert r.status == "HUMAN" and r.t_ms == 200 + 200 + 100 + 200 + 800


def test_threshold_is_strictly_below_256() -> None:
    # mean |x| == 256 is voice, 255 is silence (C: accum < threshold)
    assert run_asterisk_amd(pattern((3000, 255))).cause.startswith("INITIALSILENCE")
    assert run_asterisk_amd(pattern((100, 0), (3000, 256))).cause.startswith("LONGGREETING")


def test_clicks_shorter_than_a_word_end_in_notsure() -> None:
    # 40 ms bursts every second: never a word, but they keep resetting the DSP's silence run
    r = run_asterisk_amd(pattern(*([(960, 0), (40, 3000)] * 6)))
    assert (r.status, r.label, r.t_ms) == ("NOTSURE", "unknown", 5000)


def test_streaming_in_odd_chunks_matches_whole_file() -> None:
    x = pattern((300, 0), (500, 3000), (150, 0), (300, 2500), (2000, 0))
    whole = run_asterisk_amd(x)
    amd = AsteriskAmd()
    for i in range(0, x.size, 77):
        if amd.feed(x[i : i + 77]):
            break
    assert amd.result == whole


def test_short_file_is_padded_with_quiet_line() -> None:
    r = run_asterisk_amd(pattern((300, 0), (400, 3000)))  # file ends mid-call
    assert r.status == "HUMAN" and r.t_ms == 300 + 400 + 800
    assert run_asterisk_amd(pattern((300, 0), (400, 3000)), pad=False).status == "NOTSURE"


def test_config_overrides() -> None:
    cfg = AsteriskAmdConfig(after_greeting_silence=1200)
    r = run_asterisk_amd(pattern((300, 0), (500, 3000), (2000, 0)), cfg)
    assert r.t_ms == 300 + 500 + 1200


def test_twilio_defaults_follow_twilios_documented_thresholds() -> None:
    """Speech then 1200 ms of silence -> human; > 2400 ms of speech (any number of words) -> machine;
    5000 ms of initial silence -> unknown (not machine, as app_amd would say)."""
    r = run_asterisk_amd(pattern((300, 0), (500, 3000), (3000, 0)), TWILIO_DEFAULTS)
    assert (twilio_answered_by(r), r.t_ms) == ("human", 300 + 500 + 1200)
    words = [(200, 2000), (100, 0)] * 12  # 12 words, 2400 ms of voice in 3600 ms
    r = run_asterisk_amd(pattern((200, 0), *words, (2000, 2000)), TWILIO_DEFAULTS)
    assert twilio_answered_by(r) == "machine_start" and r.cause.startswith("LONGGREETING-2400")
    r = run_asterisk_amd(pattern((8000, 10)), TWILIO_DEFAULTS)
    assert (twilio_answered_by(r), r.t_ms) == ("unknown", 5000)
