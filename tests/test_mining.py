"""kd.distill.mining: candidate pools, false-negative filtering, fixed-size selection."""

import random

from kd.distill import mining


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


def test_score_candidates_by_matrix_and_by_pairs_agree_in_shape_and_order() -> None:
    import numpy as np
    import pytest

    from kd.models.teacher_corpus import TeacherCorpus

    groups = [mining.Candidates("q1", "a", ["b", "c"]), mining.Candidates("q2", "c", ["a"])]
    view = TeacherCorpus(["a", "b", "c"], np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32), {})
    q_emb = {"q1": np.array([1.0, 0.0], np.float32), "q2": np.array([0.0, 1.0], np.float32)}
    by_view = mining.score_candidates(groups, {}, {}, None, view, q_emb)
    assert by_view == [[1.0, 0.0, pytest.approx(0.6)], [pytest.approx(0.8), 0.0]]

    class Pairs:  # a pair scorer that scores by text length, so the order of the pairs shows
        def score(self, queries: list[str], passages: list[str]) -> np.ndarray:
            return np.array([len(q) + len(p) / 10 for q, p in zip(queries, passages)], dtype=np.float32)

    corpus = {d: {"title": "", "text": d * (i + 1)} for i, d in enumerate("abc")}
    by_pairs = mining.score_candidates(groups, {"q1": "x", "q2": "yy"}, corpus, Pairs(), None, {})  # type: ignore[arg-type]
    assert by_pairs == [pytest.approx([1.1, 1.2, 1.3]), pytest.approx([2.3, 2.1])]
    with pytest.raises(TypeError, match="view"):
        mining.score_candidates(groups, {}, {}, None, None, {})


def test_training_groups_filter_pad_and_count_dropped() -> None:
    from kd.config import MiningConfig

    cfg = MiningConfig(num_negatives=2, fn_margin=0.1, fn_threshold=None)
    groups = [mining.Candidates("q1", "p", ["n1", "fn", "n2"], ["bm25"] * 3, ["p"])]
    scores = [[0.9, 0.5, 0.85, 0.4]]  # fn scores within the margin of the positive: a likely false negative
    frame, dropped = mining.training_groups(groups, scores, {"q1": "query"}, {}, set(), cfg, seed=13)
    assert dropped == 1
    row = frame.iloc[0]
    assert row["neg_ids"] == ["n1", "n2"] and row["sources"] == ["bm25", "bm25"] and row["teacher_q"] == []


def test_mine_keeps_held_out_passages_out_and_needs_judged_queries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The whole mining step with the packaged MiniLM as a bi-encoder teacher over its own passage matrix."""
    import pytest

    from kd.config import MiningConfig, ModelConfig
    from kd.data.io import Dataset
    from kd.errors import DataError
    from kd.models.teacher import load_teacher
    from kd.models.teacher_corpus import TeacherCorpus

    texts = {
        "open": "open() returns a file object; read() reads the whole file.",
        "sort": "sorted() returns a new sorted list from the items of an iterable.",
        "json": "json.loads parses a JSON document into Python objects.",
        "zip": "zip() iterates over several iterables in parallel.",
        "held": "pathlib.Path.read_text reads a file as a string.",
    }
    corpus = {d: {"title": "", "text": t} for d, t in texts.items()}
    ds = Dataset(
        corpus,
        {"train": {"q1": "how do I read a file", "q2": "sort a list"}, "dev": {}, "test": {"t1": "read a file as text"}},
        {"train": {"q1": {"open": 1}, "q2": {"sort": 1}}, "dev": {}, "test": {"t1": {"held": 1}}},
    )
    teacher = load_teacher(ModelConfig(name="minilm", model="minilm", kind="bi_encoder", max_seq_length=64))
    docids = sorted(corpus)
    view = TeacherCorpus(docids, teacher.encode_passages([texts[d] for d in docids]), {})
    cfg = MiningConfig(depth=4, num_negatives=2, sources=["teacher"])
    df = mining.mine(cfg, 13, ds, {}, teacher, view, tmp_path)
    assert sorted(df["qid"]) == ["q1", "q2"] and list(df.set_index("qid").loc["q1", "pos_id"]) != []
    for neg_ids in df["neg_ids"]:
        assert "held" not in neg_ids and len(neg_ids) == 2  # judged for test: never a negative
    assert all(len(q) == 384 for q in df["teacher_q"])  # the teacher's query embedding, kept for later stages
    empty = Dataset(corpus, {**ds.queries, "train": {}}, {**ds.qrels, "train": {}})
    with pytest.raises(DataError, match="data.max_train_queries"):
        mining.mine(cfg, 13, empty, {}, teacher, view, tmp_path)
