"""nDCG@10 / MRR@10 / Recall@100 against hand-computed values; TREC files; the paired test."""

from __future__ import annotations

import math
import re

import pytest

from kd.errors import DataError
from kd.retrieval.metrics import cut, evaluate, paired_test, per_query, read_trec, write_trec

QRELS = {
    "q1": {"d1": 1, "d2": 1},
    "q2": {"d3": 2, "d4": 1},
    "q3": {"d5": 1},
    "q4": {"d6": 1},  # missing from the run
    "q5": {"d7": 1, "d8": 0},  # d8 judged non-relevant
}


def ranked(*docids):
    """A run entry with descending scores in the given order."""
    return {d: float(100 - i) for i, d in enumerate(docids)}


RUN = {
    "q1": ranked("d1", "x1", "d2"),
    "q2": ranked("d4", "d3"),
    "q3": ranked(*[f"x{i}" for i in range(10)], "d5"),  # only relevant doc at rank 11
    "q5": ranked("d8", "d7"),
    "q9": ranked("d1"),  # not judged: ignored
}

# linear gains, log2(rank + 1) discount (trec_eval's ndcg_cut)
NDCG = {
    "q1": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),  # 1.5 / 1.630930 = 0.919721
    "q2": (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)),  # 2.261860 / 2.630930 = 0.859719
    "q3": 0.0,
    "q4": 0.0,
    "q5": (1 / math.log2(3)) / 1,  # 0.630930
}
MRR = {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 0.0, "q5": 0.5}
RECALL = {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.0, "q5": 1.0}


def test_hand_computed_values():
    assert NDCG["q1"] == pytest.approx(0.919721, abs=1e-6)
    assert NDCG["q2"] == pytest.approx(0.859719, abs=1e-6)
    pq = per_query(QRELS, RUN)
    assert set(pq["nDCG@10"]) == set(QRELS)  # q9 left out, q4 present
    for name, expected in (("nDCG@10", NDCG), ("MRR@10", MRR), ("Recall@100", RECALL)):
        assert pq[name] == pytest.approx(expected), name


def test_means_count_missing_queries_as_zero():
    means = evaluate(QRELS, RUN)
    assert means["nDCG@10"] == pytest.approx((0.919721 + 0.859719 + 0.630930) / 5, abs=1e-6)
    assert means["MRR@10"] == pytest.approx(2.5 / 5)
    assert means["Recall@100"] == pytest.approx(4 / 5)


def test_rank_11_gives_zero_mrr_but_counts_for_recall():
    pq = per_query({"q3": QRELS["q3"]}, {"q3": RUN["q3"]})
    assert pq["MRR@10"]["q3"] == 0.0 and pq["nDCG@10"]["q3"] == 0.0
    assert pq["Recall@100"]["q3"] == 1.0


def test_recall_at_100_cuts_the_run():
    run = {"q": ranked(*[f"x{i}" for i in range(100)], "hit")}
    assert evaluate({"q": {"hit": 1}}, run)["Recall@100"] == 0.0


def test_cut_breaks_ties_by_docid():
    assert list(cut({"q": {"b": 1.0, "a": 1.0, "c": 2.0}}, 2)["q"]) == ["c", "a"]


def test_trec_round_trip(tmp_path):
    run = {"q2": {"b": 0.5, "a": 1.25, "c": -2.0}, "q1": {"z": 3.0}}
    path = tmp_path / "runs" / "bm25.trec"
    write_trec(run, path, "bm25")
    assert path.read_text().splitlines() == [
        "q1 Q0 z 1 3.000000 bm25",
        "q2 Q0 a 1 1.250000 bm25",
        "q2 Q0 b 2 0.500000 bm25",
        "q2 Q0 c 3 -2.000000 bm25",
    ]
    assert read_trec(path) == run


def test_read_trec_errors(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 3.0 tag\n\nq1 Q0 d2 2 2.0\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:3") + ".*qid Q0 docid rank score tag"):
        read_trec(path)
    path.write_text("q1 Q0 d1 1 high tag\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:1") + ".*'high' is not a number"):
        read_trec(path)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "none.trec")) + " not found"):
        read_trec(tmp_path / "none.trec")


def test_paired_test():
    qids = [f"q{i}" for i in range(20)]
    base = {q: 0.2 + 0.03 * i for i, q in enumerate(qids)}
    better = {q: v + 0.2 + 0.01 * (i % 3) for i, (q, v) in enumerate(base.items())}
    res = paired_test(better, base)
    assert res["n"] == 20
    assert res["mean_diff"] == pytest.approx(0.2 + 0.01 * (7 * 1 + 6 * 2) / 20)  # 7 ones, 6 twos
    assert res["t_pvalue"] < 0.05 and res["wilcoxon_pvalue"] < 0.05
    same = paired_test(base, dict(base))
    assert same["t_pvalue"] == 1.0 and same["wilcoxon_pvalue"] == 1.0 and same["mean_diff"] == 0.0


def test_paired_test_uses_shared_queries_only():
    res = paired_test({"a": 1.0, "b": 0.0, "c": 5.0}, {"a": 0.0, "b": 0.0, "z": 9.0})
    assert res["n"] == 2 and res["mean_diff"] == pytest.approx(0.5)
