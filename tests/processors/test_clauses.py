"""Clause splitting of a streaming LLM reply: a short first clause, then punctuation-sized clauses."""

from processors.clauses import ClauseSplitter


def stream(text: str, step: int = 3) -> list[str]:
    s = ClauseSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += s.feed(text[i : i + step])
    rest = s.flush()
    return out + ([rest] if rest else [])


def test_first_clause_is_short_and_the_rest_follow_punctuation():
    clauses = stream("Sure, I can help with that. Your order ships on Monday, and it arrives by Friday.")
    assert clauses == ["Sure,", "I can help with that.", "Your order ships on Monday,", "and it arrives by Friday."]
    assert stream("Hello there! I am calling about your appointment.")[0] == "Hello there!"


def test_long_run_without_punctuation_is_cut():
    clauses = stream("one two three four five six seven eight nine ten eleven twelve")
    assert len(clauses[0].split()) == 5
    assert " ".join(clauses).split() == "one two three four five six seven eight nine ten eleven twelve".split()
