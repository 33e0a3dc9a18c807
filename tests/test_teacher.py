"""kd.teacher: the content-addressed cache and the chunked, resumable group scorer (real MiniLM teacher)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kd.config import ModelConfig
from kd.models import load_teacher
from kd.teacher import CachedTeacher, VectorCache, model_key, score_groups

CFG = ModelConfig(name="minilm", model="minilm", kind="bi_encoder", max_seq_length=64, batch_size=8)


def test_vector_cache_persists_and_only_computes_missing(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def compute(xs: list[str]) -> np.ndarray:
        calls.append(xs)
        return np.array([[len(x), 1.0] for x in xs], dtype=np.float32)

    cache = VectorCache(tmp_path)
    out = cache.fill(["a", "bb", "a"], compute, chunk=1, desc="t")
    assert out.tolist() == [[1, 1], [2, 1], [1, 1]]
    assert calls == [["a"], ["bb"]]  # distinct texts once, one shard per chunk
    again = VectorCache(tmp_path)  # a new process sees the shards
    again.fill(["bb", "ccc"], compute, chunk=8, desc="t")
    assert calls[-1] == ["ccc"]


def test_model_key_changes_with_what_changes_scores() -> None:
    assert model_key(CFG) != model_key(ModelConfig(**{**CFG.__dict__, "max_seq_length": 128}))
    assert model_key(CFG) == model_key(ModelConfig(**{**CFG.__dict__, "batch_size": 64}))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> CachedTeacher:
    return CachedTeacher(load_teacher(CFG), tmp_path_factory.mktemp("cache"))


def test_cached_scores_equal_direct_scores(teacher: CachedTeacher) -> None:
    qs = ["How do I read a file?", "How do I read a file?"]
    ps = ["Use open() and read() to read a file's contents.", "The Eiffel tower is in Paris."]
    direct = teacher.teacher.score(qs, ps)
    cached = teacher.score(qs, ps, progress=False)
    assert np.allclose(direct, cached, atol=1e-5)
    assert cached[0] > cached[1]


def test_score_groups_resumes_from_kept_chunks(teacher: CachedTeacher, tmp_path: Path) -> None:
    groups = pd.DataFrame(
        {"qid": ["q1", "q2", "q3"], "pos_id": ["d1", "d2", "d3"], "neg_ids": [["d2", "d3"], ["d1", "d3"], ["d1", "d2"]]}
    )
    queries = {"q1": "read a file", "q2": "sort a list", "q3": "parse json"}
    docs = {"d1": "open() reads files", "d2": "sorted() sorts lists", "d3": "json.loads parses JSON"}
    full = score_groups(groups, queries, docs, teacher, tmp_path, "fp", chunk_size=1)
    parts = sorted((tmp_path / "fp").glob("part-*.parquet"))
    assert len(parts) == 3
    assert list(full["doc_ids"].iloc[0]) == ["d1", "d2", "d3"]  # positive first
    assert all(s[0] == max(s) for s in full["scores"])  # the teacher agrees with these positives
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # as if killed before the last chunk
    again = score_groups(groups, queries, docs, teacher, tmp_path, "fp", chunk_size=1)
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in parts[:2])  # kept chunks were not redone
    assert np.allclose(np.stack(again["scores"]), np.stack(full["scores"]), atol=1e-6)
    score_groups(groups, queries, docs, teacher, tmp_path, "other", chunk_size=1)
    assert not (tmp_path / "fp").exists()  # chunks of stale inputs are dropped
