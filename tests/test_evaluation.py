"""kd.retrieval.evaluation: every system of a split in table order, the rerank of the served backend,
and the run files, from hand-made runs."""

import numpy as np

from kd.retrieval.evaluation import split_systems, write_runs


def test_split_systems_in_table_order_and_the_rerank_of_the_served_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fixed = {"bm25": {"q": {"a": 2.0}}, "untrained": {"q": {"b": 1.0}}}
    by_backend = {"onnx": {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}, "torch": {"q": {"c": 0.9}}}
    prefer_b = lambda pairs: np.array([1.0 if d == "b" else 0.0 for _, d in pairs])  # noqa: E731
    runs = split_systems(fixed, by_backend, "onnx", (prefer_b, {"q": {"c": 1.0}}), rerank_depth=2)
    assert list(runs) == ["bm25", "untrained", "kd", "teacher", "kd+rerank@2"]
    assert runs["kd"] == by_backend["onnx"]
    assert sorted(runs["kd+rerank@2"]["q"], key=lambda d: -runs["kd+rerank@2"]["q"][d]) == ["b", "a", "c"]
    assert "teacher" not in split_systems(fixed, by_backend, "torch", (prefer_b, None), 2)
    write_runs(tmp_path / "runs", {"dev": runs})
    assert sorted(p.name for p in (tmp_path / "runs" / "dev").iterdir()) == [
        "bm25.trec", "kd.trec", "kd_rerank_at_2.trec", "teacher.trec", "untrained.trec",
    ]  # fmt: skip
