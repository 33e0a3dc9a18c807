"""kd.evaluation: teacher rerank re-orders the head and keeps the tail; the teacher-view scorers agree."""

import numpy as np
import pytest

from kd.config import ModelConfig
from kd.evaluation import (
    gap_intervals,
    gap_summary,
    markdown_table,
    rerank,
    teacher_run,
    text_pair_scorer,
    view_pair_scorer,
)
from kd.teacher import BiEncoderTeacher, load_teacher
from kd.teacher_corpus import TeacherCorpus

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


def test_gap_summary_by_hand() -> None:
    table = {"kd": {"nDCG@10": 0.6}, "teacher": {"nDCG@10": 0.7}, "untrained": {"nDCG@10": 0.5}}
    out = gap_summary(table)
    assert out["gap_closed"] == pytest.approx(0.5)
    assert out["student_over_teacher"] == pytest.approx(0.6 / 0.7)


def _pq(kd: list[float], teacher: list[float], base: list[float]) -> dict[str, dict[str, float]]:
    return {name: {f"q{i}": v for i, v in enumerate(vals)} for name, vals in (("kd", kd), ("teacher", teacher), ("untrained", base))}


def test_gap_intervals_degenerate_by_hand() -> None:
    # KD equal to the teacher on every question: every resample gives ratio 1 and gap closed 1
    teacher = [1.0, 0.5, 0.1, 0.8, 0.3]
    out = gap_intervals(_pq(teacher, teacher, [0.2, 0.1, 0.0, 0.4, 0.0]))
    assert out["student_over_teacher_ci95"] == pytest.approx([1.0, 1.0])
    assert out["gap_closed_ci95"] == pytest.approx([1.0, 1.0])
    # KD exactly half the teacher on every question: the ratio of means is 0.5 on every resample
    half = gap_intervals(_pq([v / 2 for v in teacher], teacher, [0.0] * 5))
    assert half["student_over_teacher_ci95"] == pytest.approx([0.5, 0.5])
    assert half["gap_closed_ci95"] == pytest.approx([0.5, 0.5])
    # a teacher that ties the untrained student on most resamples: those resamples are left out, no inf
    tied = gap_intervals(_pq([0.5, 0.5, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5, 0.0]))
    assert tied["gap_closed_ci95"] == pytest.approx([1.0, 1.0])


def test_gap_intervals_cover_the_point_and_shrink_with_more_questions() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> dict[str, dict[str, float]]:
        teacher = rng.uniform(0.4, 1.0, n)
        return _pq(list(teacher - rng.uniform(0.0, 0.2, n)), list(teacher), list(teacher - rng.uniform(0.1, 0.5, n)))

    small, large = sample(30), sample(600)
    width = []
    for pq in (small, large):
        out = gap_intervals(pq)
        point = gap_summary({s: {"nDCG@10": float(np.mean(list(v.values())))} for s, v in pq.items()})
        for key in ("student_over_teacher", "gap_closed"):
            low, high = out[f"{key}_ci95"]
            assert low < point[key] < high
        low, high = out["student_over_teacher_ci95"]
        assert high < 1.0  # KD is below the teacher on every question
        width.append(high - low)
    assert width[1] < width[0] / 2  # ~sqrt(20) narrower with 20x the questions
    assert gap_intervals(small) == gap_intervals(small)  # seeded: the same file gives the same interval


def test_markdown_table() -> None:
    md = markdown_table({"bm25": {"nDCG@10": 0.25}}, ["nDCG@10"])
    assert "| bm25 | 0.2500 |" in md
