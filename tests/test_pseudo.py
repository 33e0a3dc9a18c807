"""kd.distill.pseudo: question-shaped spans cropped from passages, never from held-out passages."""

import random

import pytest

from kd.distill.pseudo import as_question, crop, pseudo_queries, rewrite_as_questions, shape
from kd.errors import DataError

TEXT = "Lists are mutable sequences. You can sort a list in place with the sort method of the list. Done."


def test_crop_prefers_a_whole_sentence_in_range() -> None:
    out = crop(TEXT, 6, 20, random.Random(0))
    assert out == "You can sort a list in place with the sort method of the list."


def test_crop_falls_back_to_a_window_and_refuses_short_text() -> None:
    text = " ".join(f"w{i}" for i in range(30))  # one 30-word sentence, longer than max_words
    out = crop(text, 5, 8, random.Random(1))
    assert out is not None and 5 <= len(out.split()) <= 8 and out in text
    assert crop("too short", 5, 8, random.Random(1)) is None


def test_pseudo_queries_skip_excluded_passages_and_are_deterministic() -> None:
    corpus = {f"d{i}": {"title": "t", "text": TEXT} for i in range(10)}
    out = pseudo_queries(corpus, {"d0", "d1"}, 5, 6, 20, seed=3)
    assert len(out) == 5
    assert all(src not in {"d0", "d1"} and q == f"pq:{src}" for q, (_, src) in out.items())
    assert out == pseudo_queries(corpus, {"d0", "d1"}, 5, 6, 20, seed=3)


def test_empty_pseudo_query_set_is_an_error_naming_the_keys() -> None:
    corpus = {"d": {"title": "", "text": "tiny"}}
    with pytest.raises(DataError, match="mining.pseudo_min_words=6.*mining.pseudo_queries=0"):
        pseudo_queries(corpus, set(), 3, 6, 20, seed=0)
    with pytest.raises(DataError, match="pseudo_min_words=9 must be"):
        pseudo_queries(corpus, set(), 3, 9, 2, seed=0)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Path.glob", "identifier"),
        ("--enable-optimizations", "identifier"),
        ("STORE_SUBSCR", "identifier"),
        ("Opening network connections", "gerund"),
        ("The store action", "phrase"),
        ("Python", "phrase"),
        ("What About Exceptions?", "question"),
        ("How callbacks are called", "question"),
    ],
)
def test_shape_picks_the_template_family(text: str, kind: str) -> None:
    assert shape(text) == kind


def test_as_question_wraps_the_whole_text_and_keeps_questions() -> None:
    rng = random.Random(0)
    for text in ("Path.glob", "Opening network connections", "The store action"):
        out = as_question(text, rng)
        assert out.endswith("?") and text in out and out != text + "?"
    assert as_question("How callbacks are called", rng) == "How callbacks are called?"
    assert as_question("What About Exceptions?", rng) == "What About Exceptions?"


def test_rewrite_as_questions_share_is_reproducible_and_bounded() -> None:
    queries = {f"q{i}": f"heading number {i}" for i in range(400)}
    assert rewrite_as_questions(queries, 0.0, seed=1) == queries
    assert all(t.endswith("?") for t in rewrite_as_questions(queries, 1.0, seed=1).values())
    half = rewrite_as_questions(queries, 0.5, seed=1)
    assert half == rewrite_as_questions(queries, 0.5, seed=1) and set(half) == set(queries)
    assert 150 < sum(half[q] != queries[q] for q in queries) < 250
    with pytest.raises(DataError, match=r"mining.question_share=1.5 must lie in \[0, 1\]"):
        rewrite_as_questions(queries, 1.5, seed=1)
