"""kd.mining: candidate pools, false-negative filtering, fixed-size selection."""

import random

from kd import mining


def test_candidates_union_excludes_positives_and_held_out() -> None:
    qrels = {"q1": {"p1": 1, "p2": 1}, "q2": {"x": 0}}
    runs = {
        "bm25": {"q1": {"p2": 9.0, "a": 8.0, "p1": 7.0, "t": 6.0, "b": 5.0}},
        "dense": {"q1": {"c": 0.9, "a": 0.8}},
    }
    groups = mining.candidates(qrels, runs, depth=4, exclude={"t"})
    assert len(groups) == 1  # q2 has no positive
    g = groups[0]
    assert g.pos_id == "p2"  # best-ranked positive in the first run
    assert g.cand_ids == ["a", "c"]  # top-4 of bm25 minus positives/held-out, then dense's new ones
    assert g.sources == ["bm25", "dense"]
    assert g.positives == ["p1", "p2"]


def test_keep_mask_margin_and_threshold() -> None:
    # positive 0.8, margin 0.1: anything above 0.7 is a likely false negative
    assert mining.keep_mask(0.8, [0.75, 0.7, 0.2], fn_margin=0.1, fn_threshold=None) == [False, True, True]
    assert mining.keep_mask(0.8, [0.5, 0.2], fn_margin=None, fn_threshold=0.4) == [False, True]
    assert mining.keep_mask(0.8, [0.9], fn_margin=None, fn_threshold=None) == [True]


def test_select_hardest_survivors_then_pads_with_random() -> None:
    g = mining.Candidates("q", "p", ["a", "b", "c"], ["bm25"] * 3, positives=["p", "p2"])
    negs, srcs = mining.select(g, 0.9, [0.95, 0.5, 0.7], 4, 0.0, None, ["p2", "a", "z", "y"], random.Random(0))
    assert negs[:2] == ["c", "b"]  # 'a' (0.95 > positive) dropped; rest by teacher score
    assert srcs[:2] == ["bm25", "bm25"]
    assert sorted(negs[2:]) == ["y", "z"] and srcs[2:] == ["random", "random"]  # never a positive
