"""The whole smoke pipeline with a cross-encoder teacher, through `dvc exp run`, as a user runs it:

    dvc exp run -S +experiment=smoke -S teacher=bge_reranker_large

The smoke experiment swaps in the teacher's tiny stand-in of the same kind (`tiny_cross_encoder`, a
MiniLM with a fitted reranking head, built locally in seconds), and the test checks that the
teacher's raw logits, standardised per group, are what the student was trained on: the student's
order of the training groups agrees better with the teacher's after training than before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from kd.data.io import passage_text, read_dataset
from kd.distill.teacher_scores import normalize_scores
from kd.models.loading import encode, load_bi_encoder
from kd.models.store import MODEL_CACHE, TINY_CE_DIR
from kd.models.teacher import load_teacher
from kd.params import load_params
from tests.pipeline_fixtures import SMOKE, copy_repo, sh, shared_cache

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def _agreement(model, queries: list[str], groups: list[list[str]], teacher: np.ndarray, prefix: tuple[str, str]) -> float:
    """Mean Kendall tau, over the groups, between the student's cosines and the teacher's scores."""
    q = encode(model, queries, prefix[0])
    taus = []
    for qe, docs, t in zip(q, groups, teacher):
        s = encode(model, docs, prefix[1]) @ qe
        taus.append(kendalltau(s, t).statistic)
    return float(np.nanmean(taus))


def test_smoke_pipeline_with_a_cross_encoder_teacher(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    cache = shared_cache(tmp_path)
    if (MODEL_CACHE / TINY_CE_DIR).is_dir():  # same deterministic build; saves the copy a few seconds
        shutil.copytree(MODEL_CACHE / TINY_CE_DIR, repo / ".cache" / "models" / TINY_CE_DIR)
    sh(["dvc", "exp", "run", *SMOKE, "-S", "teacher=bge_reranker_large"], repo, cache)

    p = load_params(repo / "params.yaml")
    assert (p.teacher.kind, p.teacher.model, p.teacher.score_norm) == ("cross_encoder", "tiny_cross_encoder", "standardize")
    scores = pd.read_parquet(repo / "artifacts" / "teacher_scores.parquet")
    teacher = np.array(scores["scores"].tolist(), dtype=np.float64)
    assert len(teacher) >= 20
    varied = teacher.std(axis=1) > 0
    assert varied.mean() > 0.9
    assert np.allclose(teacher[varied].std(axis=1), p.teacher.score_scale, atol=1e-4)  # on the student's scale
    assert np.allclose(teacher.mean(axis=1), 0.0, atol=1e-5)

    ds = read_dataset(repo / "data")
    negatives = pd.read_parquet(repo / "artifacts" / "negatives.parquet")
    query_text = dict(ds.queries["train"])
    if "query" in negatives.columns:
        query_text.update(zip(negatives["qid"].astype(str), negatives["query"]))
    queries = [query_text[str(q)] for q in scores["qid"]]
    groups = [[passage_text(ds.corpus[d]) for d in ids] for ids in scores["doc_ids"]]

    # the scores are the stand-in's raw logits (not sigmoid probabilities), standardised per group
    cross = load_teacher(p.teacher)
    for i in range(3):
        raw = cross.score([queries[i]] * len(groups[i]), groups[i])
        assert np.corrcoef(normalize_scores(raw, "standardize", p.teacher.score_scale), teacher[i])[0, 1] > 0.99

    prefix = (p.student.query_prefix, p.student.passage_prefix)
    before = _agreement(load_bi_encoder(p.student.model, p.student.max_seq_length), queries, groups, teacher, prefix)
    after = _agreement(load_bi_encoder(str(repo / "artifacts" / "student"), p.student.max_seq_length), queries, groups,
                       teacher, prefix)  # fmt: skip
    assert after > before + 0.05, (before, after)

    metrics = (repo / "metrics.json").read_text()
    assert "kd+rerank@" in metrics and "not computed: a cross-encoder teacher" in metrics
