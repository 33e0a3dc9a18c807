"""kd.retrieval.report: the teacher ratio, gap closed and their intervals; the report, the table rows and
the MLflow names, from hand-made numbers."""

import numpy as np
import pytest

from kd.retrieval.report import (
    NOT_COMPUTED,
    gap_intervals,
    gap_summary,
    markdown_table,
    report_markdown,
    split_summary,
    table_rows,
    tracked_metrics,
)


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


TABLE = {
    "untrained": {"nDCG@10": 0.4, "MRR@10": 0.3},
    "kd": {"nDCG@10": 0.6, "MRR@10": 0.5},
    "teacher": {"nDCG@10": 0.8, "MRR@10": 0.7},
}
PER_QUERY = {
    "untrained": {"q1": 0.2, "q2": 0.4, "q3": 0.6},
    "kd": {"q1": 0.5, "q2": 0.6, "q3": 0.7},
    "teacher": {"q1": 0.7, "q2": 0.8, "q3": 0.9},
}


def metrics_of(table: dict[str, dict[str, float]], per_query: dict[str, dict[str, float]]) -> dict[str, object]:
    summary = split_summary(table, per_query)
    return {"queries": {"dev": 3}, "dev": {"table": table, **summary, "kd_ndcg@10_by_query_backend": {"onnx": 0.6}}}


def test_split_summary_with_and_without_the_teacher() -> None:
    with_teacher = split_summary(TABLE, PER_QUERY)
    assert with_teacher["student_over_teacher"] == pytest.approx(0.75)
    assert with_teacher["gap_closed"] == pytest.approx(0.5)
    assert with_teacher["kd_vs_untrained_ndcg@10"]["mean_diff"] == pytest.approx(0.2)  # type: ignore[index]
    without = split_summary({k: v for k, v in TABLE.items() if k != "teacher"}, PER_QUERY)
    assert without["teacher_alone"] == NOT_COMPUTED and "gap_closed" not in without


def test_report_rows_and_mlflow_names() -> None:
    metrics = metrics_of(TABLE, PER_QUERY)
    md = report_markdown(metrics, 100, "torch (float32)", ["nDCG@10"])
    assert md.startswith("### dev (3 queries, full corpus of 100 passages)")
    assert "| kd | 0.6000 |" in md and "KD / teacher 75.0%" in md and "gap closed 50.0%" in md
    assert "corpus encoded with torch (float32)): onnx 0.6000" in md
    assert table_rows(metrics, ["nDCG@10", "MRR@10"])[1] == ["dev", "kd", 0.6, 0.5]
    flat = tracked_metrics(metrics)
    assert flat["dev.kd.nDCG@10"] == 0.6 and flat["dev.gap_closed"] == pytest.approx(0.5)
    assert flat["dev.kd_ndcg_at_10.backend.onnx"] == 0.6
    assert flat["dev.gap_closed_ci95_low"] <= 0.5 <= flat["dev.gap_closed_ci95_high"]
    no_teacher = metrics_of({k: v for k, v in TABLE.items() if k != "teacher"}, PER_QUERY)
    assert f"teacher alone {NOT_COMPUTED}" in report_markdown(no_teacher, 100, "torch", ["nDCG@10"])
    assert not any("gap_closed" in k for k in tracked_metrics(no_teacher))


def test_write_tables_writes_the_csv_and_the_markdown_it_returns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kd.retrieval.metrics import MEASURES
    from kd.retrieval.report import write_tables

    metrics = metrics_of({k: {m: v["nDCG@10"] for m in MEASURES} for k, v in TABLE.items()}, PER_QUERY)
    md = write_tables(tmp_path / "eval", metrics, 100, "torch (float32)")
    assert (tmp_path / "eval" / "table.md").read_text() == md and "| kd | 0.6000 | 0.6000 | 0.6000 |" in md
    lines = (tmp_path / "eval" / "table.csv").read_text().splitlines()
    assert lines[0] == "split,system," + ",".join(MEASURES) and "dev,kd,0.6,0.6,0.6" in lines
    assert not [p.name for p in (tmp_path / "eval").iterdir() if p.name not in ("table.md", "table.csv")]  # no temp files
