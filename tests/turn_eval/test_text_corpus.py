"""The text model's generated sentences: reproducible, labelled at pause points, and never a test word."""

from __future__ import annotations

from turn_eval.text_corpus import BENCH_LINES, TEMPLATES, is_excluded, sentences, template_split


def test_generation_is_reproducible_from_its_seed() -> None:
    assert sentences(200, seed=4) == sentences(200, seed=4)
    assert sentences(200, seed=4) != sentences(200, seed=5)


def test_prefixes_at_pause_points_are_unfinished_and_whole_sentences_complete() -> None:
    pairs = sentences(2000, seed=1)
    complete = {t.lower().rstrip(".?") for t, y in pairs if y == 1}
    unfinished = {t.lower().rstrip(",") for t, y in pairs if y == 0}
    assert complete and unfinished
    ends = {u.split()[-1] for u in unfinished}
    assert {"to", "the", "is", "and"} <= ends  # "I'd like to", "on the", "my number is", "... and"
    # a sentence that stops on an article or a preposition is never labelled complete
    assert not [c for c in complete if c.split()[-1] in {"the", "a", "to", "of", "my"}]


def test_no_test_pool_word_and_no_bench_line_is_ever_generated() -> None:
    for split in ("train", "held_out"):
        assert not [t for t, _ in sentences(3000, seed=2, split=split) if is_excluded(t)]
    assert all(is_excluded(line) for line in BENCH_LINES)
    assert is_excluded("my modem keeps failing")  # test pool: "modem", "keeps failing"


def test_a_fifth_of_the_templates_is_held_out() -> None:
    held = [t for i, t in enumerate(TEMPLATES) if template_split(i) == "held_out"]
    assert abs(len(held) - len(TEMPLATES) / 5) <= 1
