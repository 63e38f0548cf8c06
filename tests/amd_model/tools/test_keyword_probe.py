"""keyword_probe: the phrase cues a pocketsphinx transcript gives, and when each is known."""

from __future__ import annotations

import pytest

from amd_model.tools.keyword_probe import find_cues, main


def test_a_cue_is_known_when_its_phrase_ends_and_the_earliest_phrase_wins() -> None:
    words = [("<s>", 0.0), ("please", 400.0), ("leave(2)", 700.0), ("a", 800.0), ("message", 1300.0),
             ("after", 1600.0), ("the", 1700.0), ("tone", 2100.0), ("</s>", 2200.0)]
    assert find_cues(words) == {"machine": 1300.0}


def test_each_label_gets_its_own_first_phrase() -> None:
    words = [("for", 300.0), ("sales", 700.0), ("press", 1000.0), ("one", 1200.0), ("[noise]", 1400.0),
             ("the", 1500.0), ("number", 1800.0), ("you", 1900.0), ("have", 2000.0), ("dialed", 2400.0)]
    assert find_cues(words) == {"ivr": 1200.0, "carrier_intercept": 2400.0}


def test_a_phrase_must_be_whole_words_and_a_greeting_without_one_gives_nothing() -> None:
    assert find_cues([("hello", 500.0), ("this", 800.0), ("is", 900.0), ("ana", 1200.0)]) == {}
    assert find_cues([("optional", 500.0)]) == {}  # 'option' is not a word of it
    assert find_cues([]) == {}


def test_a_folder_that_is_not_a_corpus_is_a_one_line_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), str(tmp_path)])
    assert e.value.code == 2
    assert "not a corpus (no meta.jsonl)" in capsys.readouterr().err
