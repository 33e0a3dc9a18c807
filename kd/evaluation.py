"""Evaluation helpers that combine runs: teacher reranking, the teacher alone, the results table."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats

from kd.metrics import Run, cut
from kd.teacher import Teacher
from kd.teacher_corpus import TeacherCorpus

PairScorer = Callable[[list[tuple[str, str]]], np.ndarray]  # (qid, docid) pairs -> teacher scores


def text_pair_scorer(queries: dict[str, str], doc_text: dict[str, str], teacher: Teacher) -> PairScorer:
    """Score pairs by text with any `Teacher` (a cross-encoder, or a bi-encoder without a corpus view)."""
    return lambda pairs: teacher.score([queries[q] for q, _ in pairs], [doc_text[d] for _, d in pairs])


def view_pair_scorer(q_emb: dict[str, np.ndarray], view: TeacherCorpus) -> PairScorer:
    """Score pairs as dot products with the precomputed teacher passage rows: no passage is encoded."""
    pos = view.positions
    return lambda pairs: np.array([float(view.emb[pos[d]] @ q_emb[q]) for q, d in pairs], dtype=np.float32)


def rerank(run: Run, depth: int, score: PairScorer) -> Run:
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


def gap_summary(table: dict[str, dict[str, float]], measure: str = "nDCG@10") -> dict[str, float]:
    """How much of the teacher the KD student recovers: ratio to the teacher, share of the gap closed."""
    kd, teacher, base = table["kd"][measure], table["teacher"][measure], table["untrained"][measure]
    gap = teacher - base
    return {
        "student_over_teacher": kd / teacher if teacher else float("nan"),
        "gap_closed": (kd - base) / gap if gap else float("nan"),
    }


def gap_intervals(
    pq: dict[str, dict[str, float]], n_resamples: int = 2000, seed: int = 0
) -> dict[str, list[float]]:
    """95% bootstrap intervals of `gap_summary`'s ratios, the questions resampled (paired across systems).

    Why: with 50-120 questions a ratio's point value hides how much it owes to which questions were
    asked; the interval says whether a miss (or a win) is beyond that sampling noise. `pq` maps system
    -> qid -> a per-query measure (nDCG@10 in `evaluate`) for `kd`, `teacher` and `untrained`. Seeds
    are a separate source of spread (bench.seeds).
    """
    qids = sorted(pq["kd"])
    kd, teacher, base = (np.array([pq[s].get(q, 0.0) for q in qids]) for s in ("kd", "teacher", "untrained"))

    def ratio(k: np.ndarray, t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        """Student over teacher: mean(k) / mean(t) along `axis` (`b`, the untrained student, unused)."""
        return np.asarray(k.mean(axis) / t.mean(axis))

    def closed(k: np.ndarray, t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        """Gap closed: (mean(k) - mean(b)) / (mean(t) - mean(b)) along `axis`."""
        return np.asarray((k.mean(axis) - b.mean(axis)) / (t.mean(axis) - b.mean(axis)))

    out: dict[str, list[float]] = {}
    for name, statistic in (("student_over_teacher", ratio), ("gap_closed", closed)):
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # the interval is read below, not by scipy
            res = stats.bootstrap(
                (kd, teacher, base), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                method="percentile", rng=np.random.default_rng(seed),
            )
        # the percentile interval, read off the draws: resamples where the teacher ties the untrained
        # student (gap closed undefined) are left out, and a constant statistic gives [v, v] (scipy: nan)
        draws = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
        low, high = np.percentile(draws, [2.5, 97.5]) if draws.size else (float("nan"), float("nan"))
        out[f"{name}_ci95"] = [float(low), float(high)]
    return out


def markdown_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A Markdown table with one row per system and its `columns` values to 4 decimals.

    Example:
        >>> print(markdown_table({"kd": {"nDCG@10": 0.5}}, ["nDCG@10"]), end="")
        | system | nDCG@10 |
        |---|---|
        | kd | 0.5000 |
    """
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for system, values in rows.items():
        lines.append(f"| {system} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"
