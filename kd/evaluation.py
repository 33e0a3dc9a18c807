"""Evaluation helpers that combine runs: teacher reranking and the results table."""

from __future__ import annotations

import numpy as np

from kd.metrics import Run, cut
from kd.models import Teacher


def rerank(run: Run, depth: int, queries: dict[str, str], doc_text: dict[str, str], teacher: Teacher) -> Run:
    """Re-order each query's top-`depth` by teacher score; the rest keep their order below them.

    Scores in the returned run are rank-derived so they stay consistent with the new order.
    """
    top = cut(run, depth)
    qs, ps, keys = [], [], []
    for qid, docs in top.items():
        for d in docs:
            qs.append(queries[qid])
            ps.append(doc_text[d])
            keys.append((qid, d))
    scores = teacher.score(qs, ps) if keys else np.zeros(0, dtype=np.float32)
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


def markdown_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for system, values in rows.items():
        lines.append(f"| {system} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"
