"""kd.retrieval.search, the retrieval core: search, group scoring and rerank on hand-made vectors, and the
teacher's rerank and matrix scorers against a real (tiny) bi-encoder."""

import numpy as np
import pytest

from kd.config import ModelConfig
from kd.models.teacher import BiEncoderTeacher, load_teacher
from kd.models.teacher_corpus import TeacherCorpus
from kd.retrieval.search import (
    encode_queries,
    exact_index,
    rerank,
    rerank_hits,
    score_matrix_groups,
    score_text_groups,
    search,
    search_rows,
    split_groups,
    teacher_run,
    text_pair_scorer,
    to_run,
    view_pair_scorer,
)

# four unit passages in 2-d: row 0 along x, row 1 along y, rows 2 and 3 between
PASSAGES = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)


def test_search_rows_best_first_capped_at_the_index_size() -> None:
    index = exact_index(PASSAGES)
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    hits = search_rows(index, q, 10)
    assert [r for r, _ in hits[0]] == [0, 3, 2, 1] and [r for r, _ in hits[1]] == [1, 2, 3, 0]
    assert hits[0][1][1] == pytest.approx(0.8)
    assert search_rows(index, q[:0], 3) == []
    named = search(index, q, ["a", "b", "c", "d"], 2)
    assert named == [[("a", 1.0), ("d", pytest.approx(0.8))], [("b", 1.0), ("c", pytest.approx(0.8))]]
    assert to_run(["q1", "q2"], named)["q2"] == {"b": 1.0, "c": pytest.approx(0.8)}


def test_group_scoring_flattens_once_and_splits_back() -> None:
    calls = []

    def score(qs: list[str], ps: list[str]) -> np.ndarray:
        calls.append(len(qs))
        return np.array([len(q) * 10 + len(p) for q, p in zip(qs, ps)], dtype=np.float32)

    out = score_text_groups(score, ["q", "qq"], [["a", "bb", "ccc"], ["dddd"]])
    assert calls == [4]  # one scorer call for every pair
    assert [o.tolist() for o in out] == [[11.0, 12.0, 13.0], [24.0]]
    assert score_text_groups(score, [], []) == [] and calls == [4]
    assert [g.tolist() for g in split_groups(np.arange(5), [2, 0, 3])] == [[0, 1], [], [2, 3, 4]]
    by_matrix = score_matrix_groups(np.array([[1.0, 0.0], [0.0, 1.0]]), [PASSAGES[:2], PASSAGES[2:]])
    assert [g.tolist() for g in by_matrix] == [[1.0, 0.0], [pytest.approx(0.8), pytest.approx(0.6)]]


def test_rerank_hits_orders_by_score_and_keeps_ties_in_hit_order() -> None:
    hits = [(7, 0.9), (3, 0.8), (5, 0.7)]
    assert rerank_hits(hits, np.array([0.1, 0.5, 0.5]), 2) == [(3, 0.5), (5, 0.5)]
    assert rerank_hits(hits, np.array([0.3, 0.2, 0.1]), 10) == [(7, 0.3), (3, 0.2), (5, 0.1)]


def test_encode_queries_takes_the_fast_path_when_given() -> None:
    fast = lambda texts: np.full((len(texts), 2), 0.5, dtype=np.float32)  # noqa: E731
    assert encode_queries(None, ["a", "b"], fast).shape == (2, 2)  # type: ignore[arg-type]


DOCS = {
    "a": "The Eiffel Tower is a landmark in Paris.",
    "b": "To read a text file, open it with open() and call read().",
    "c": "Lists can be sorted in place with list.sort().",
    "d": "Reading a file: open() returns a file object whose read() method returns its contents.",
}
QUERIES = {"q": "How do I read a file?"}


@pytest.fixture(scope="module")
def teacher() -> BiEncoderTeacher:
    t = load_teacher(ModelConfig(name="minilm", model="minilm", max_seq_length=64))
    assert isinstance(t, BiEncoderTeacher)
    return t


def test_rerank_reorders_top_k_only(teacher: BiEncoderTeacher) -> None:
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}}
    out = rerank(run, 3, text_pair_scorer(QUERIES, DOCS, teacher))
    order = sorted(out["q"], key=lambda d: -out["q"][d])
    assert order[0] == "b"  # the teacher lifts the relevant passage to the top
    assert order[-1] == "d"  # beyond the rerank depth, untouched even though it is relevant
    assert set(order) == set(run["q"])


def test_view_scorer_equals_text_scorer_and_teacher_run(teacher: BiEncoderTeacher) -> None:
    ids = sorted(DOCS)
    view = TeacherCorpus(ids, teacher.encode_passages([DOCS[d] for d in ids]), {})
    q_emb = {"q": teacher.encode_queries([QUERIES["q"]])[0]}
    pairs = [("q", d) for d in ids]
    by_view = view_pair_scorer(q_emb, view)(pairs)
    by_text = text_pair_scorer(QUERIES, DOCS, teacher)(pairs)
    np.testing.assert_allclose(by_view, by_text, atol=1e-5)
    run = teacher_run(q_emb, view, 2)
    best_two = [ids[i] for i in np.argsort(-by_text)[:2]]
    assert list(run["q"]) == best_two  # exact search over the view, best first


def test_encode_queries_matches_the_models_encode(teacher: BiEncoderTeacher) -> None:
    from kd.models.loading import encode

    got = encode_queries(teacher.model, ["read a file", "sort a list"])
    np.testing.assert_array_equal(got, encode(teacher.model, ["read a file", "sort a list"], batch_size=2))
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
