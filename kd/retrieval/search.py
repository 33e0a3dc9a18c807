"""The retrieval core: encode queries, search an index, score (query, passage) groups, rerank.

Every caller goes through here: the stages (`baseline`, `evaluate`, `negatives`, `teacher`), the
service's `Engine`, the evaluation and the benchmarks. Nothing else builds a query embedding for
search, calls a FAISS index's `search`, or flattens and splits group scores.

Two result shapes (beir's contract for the second):
  * hits: per query, `(row or docid, score)` best first, what an index returns;
  * run: `dict[qid, dict[docid, score]]` (`kd.retrieval.metrics.Run`), what metrics and TREC files take.

Example:
    >>> emb = encode_queries(student, ["how do I copy a file?"])        # [1, D] float32, unit rows
    >>> hits = search(index, emb, docids, k=10)                          # [[(docid, cosine), ...]]
    >>> scores = score_text_groups(teacher.score, ["q"], [["p1", "p2"]])  # [array([s1, s2])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import faiss
import numpy as np

from kd.models.backends import OnnxQueryEncoder
from kd.models.loading import encode
from kd.retrieval.metrics import Run, cut

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from kd.models.teacher import Teacher
    from kd.models.teacher_corpus import TeacherCorpus

RowHits = list[list[tuple[int, float]]]  # per query: (index row, score), best first
IdPairScorer = Callable[[list[tuple[str, str]]], np.ndarray]  # (qid, docid) pairs -> [n] teacher scores
TextScorer = Callable[[list[str], list[str]], np.ndarray]  # (queries[i], passages[i]) -> [n] scores


def encode_queries(
    model: SentenceTransformer,
    texts: list[str],
    fast: Callable[[list[str]], np.ndarray] | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """L2-normalised float32 query embeddings [n, D].

    Args:
        model: the student (any backend `kd.models.backends.load_student` returns).
        texts: the queries, prefix already applied.
        fast: the ONNX query path (`kd.models.backends.OnnxQueryEncoder`), or None for `model.encode`.
        batch_size: queries per forward pass (None: all in one, as a search request does; bulk
            evaluation passes `student.batch_size`).
    """
    if fast is not None:
        return fast(texts)
    return np.ascontiguousarray(encode(model, texts, batch_size=batch_size or max(len(texts), 1)))


def query_encoder(model: SentenceTransformer, prefix: str = "") -> Callable[[list[str]], np.ndarray]:
    """The query encoder as the service runs it: the ONNX fast path where the model's layout allows
    (`kd.models.backends.OnnxQueryEncoder`), else `encode_queries`. `texts -> float32 [n, D]`, unit rows."""
    fast = OnnxQueryEncoder.from_model(model)
    return lambda texts: encode_queries(model, [prefix + t for t in texts] if prefix else texts, fast)


def exact_index(emb: np.ndarray) -> faiss.IndexFlatIP:
    """An exact inner-product index over `emb` [N, D] (row r = emb[r]): a reference, or a small corpus."""
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index


def search_rows(index: faiss.Index, query_emb: np.ndarray, k: int) -> RowHits:
    """Top-`k` index rows of each query by inner product (cosine for unit vectors), best first.

    Args:
        index: any FAISS index.
        query_emb: [n, D] query embeddings.
        k: hits per query (capped at the index size).

    Returns:
        For each query, its (row, score) hits; rows FAISS leaves empty (-1) are dropped.
    """
    if len(query_emb) == 0:
        return []
    scores, rows = index.search(np.ascontiguousarray(query_emb, dtype=np.float32), min(k, index.ntotal))
    return [
        [(int(r), float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
        for row_ids, row_scores in zip(rows, scores)
    ]


def search(index: faiss.Index, query_emb: np.ndarray, docids: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """`search_rows` with each row named by its passage id (`docids[r]` is row r)."""
    return [[(docids[r], s) for r, s in hits] for hits in search_rows(index, query_emb, k)]


def to_run(qids: list[str], hits: list[list[tuple[str, float]]]) -> Run:
    """A run (qid -> docid -> score) from `search`'s hits, `hits[i]` being the hits of `qids[i]`."""
    return {q: dict(h) for q, h in zip(qids, hits)}


def split_groups(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cut a flat score vector into consecutive groups of `sizes` (the inverse of flattening groups)."""
    return np.split(np.asarray(flat), np.cumsum(sizes)[:-1]) if len(sizes) else []


def score_text_groups(score: TextScorer, queries: list[str], groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Score each query against its group of passage texts in one scorer call (a cross-encoder, any `Teacher`).

    Args:
        score: scores pairs by position, `score(qs, ps)[i]` for (qs[i], ps[i]).
        queries: n query texts.
        groups: n groups of passage texts, `groups[i]` for `queries[i]`.

    Returns:
        n float32 arrays, array i with one score per passage of `groups[i]`.
    """
    qs = [q for q, g in zip(queries, groups) for _ in g]
    ps = [p for g in groups for p in g]
    flat = score(qs, ps) if qs else np.zeros(0, np.float32)
    return [np.asarray(s, dtype=np.float32) for s in split_groups(flat, [len(g) for g in groups])]


def score_matrix_groups(query_emb: Sequence[np.ndarray] | np.ndarray, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Score each query embedding against its group of precomputed passage rows: dot products.

    Args:
        query_emb: n query embeddings [D] (a bi-encoder teacher's, unit length).
        groups: n matrices [m_i, D], the passages' rows of the teacher's passage matrix.

    Returns:
        n arrays [m_i]: `groups[i] @ query_emb[i]`.
    """
    return [m @ q for q, m in zip(query_emb, groups)]


def rerank_hits(hits: list[tuple[int, float]], scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """One query's hits re-ordered by `scores` (one per hit), best first, the top `k` kept; ties keep hit order."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return [(hits[i][0], float(scores[i])) for i in order]


def text_pair_scorer(queries: dict[str, str], doc_text: dict[str, str], teacher: Teacher) -> IdPairScorer:
    """Score (qid, docid) pairs by text with any `Teacher` (a cross-encoder, or a bi-encoder without its matrix)."""
    return lambda pairs: teacher.score([queries[q] for q, _ in pairs], [doc_text[d] for _, d in pairs])


def view_pair_scorer(q_emb: dict[str, np.ndarray], view: TeacherCorpus) -> IdPairScorer:
    """Score (qid, docid) pairs as dot products with the teacher's precomputed passage rows: no passage is encoded."""
    pos = view.positions
    return lambda pairs: np.array([float(view.emb[pos[d]] @ q_emb[q]) for q, d in pairs], dtype=np.float32)


def rerank(run: Run, depth: int, score: IdPairScorer) -> Run:
    """Re-order each query's top-`depth` by teacher score; the rest keep their order below them.

    Scores in the returned run are rank-derived so they stay consistent with the new order.
    """
    top = cut(run, depth)
    keys = [(qid, d) for qid, docs in top.items() for d in docs]
    scores = score(keys) if keys else np.zeros(0, dtype=np.float32)
    teacher_scores: dict[str, dict[str, float]] = {}
    for (qid, d), s in zip(keys, scores):
        teacher_scores.setdefault(qid, {})[d] = float(s)
    out: Run = {}
    for qid, docs in run.items():
        head = sorted(teacher_scores.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        tail = [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])) if d not in teacher_scores.get(qid, {})]
        order = [d for d, _ in head] + tail
        out[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    return out


def teacher_run(q_emb: dict[str, np.ndarray], view: TeacherCorpus, depth: int) -> Run:
    """The bi-encoder teacher alone over the whole corpus (exact search over its passage matrix)."""
    qids = sorted(q_emb)
    hits = view.top_k(np.stack([q_emb[q] for q in qids]), depth) if qids else []
    return {q: dict(h) for q, h in zip(qids, hits)}
