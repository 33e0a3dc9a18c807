"""Evaluation through ir-measures (pytrec_eval underneath), TREC run files, paired significance.

Contract (beir): qrels `dict[qid, dict[docid, int]]`, run `dict[qid, dict[docid, float]]`.
MRR@10 is computed on the run cut at 10 (`RR@10`), so a first relevant hit at rank 11 counts 0.
"""

from __future__ import annotations

from pathlib import Path

import ir_measures
from ir_measures import RR, R, nDCG
from scipy import stats

from kd.atomic import atomic_path
from kd.errors import DataError

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

MEASURES = {"nDCG@10": nDCG @ 10, "MRR@10": RR @ 10, "Recall@100": R @ 100}


def cut(run: Run, k: int) -> Run:
    """Top-k of each query by score (ties broken by docid, as trec_eval does)."""
    return {
        q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, docs in run.items()
    }


def per_query(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """measure name -> qid -> value, for every query in qrels (missing from run = 0)."""
    out: dict[str, dict[str, float]] = {name: {q: 0.0 for q in qrels} for name in MEASURES}
    inverse = {m: name for name, m in MEASURES.items()}
    for m in ir_measures.iter_calc(list(MEASURES.values()), qrels, run):
        if m.query_id in qrels:
            out[inverse[m.measure]][m.query_id] = float(m.value)
    return out


def evaluate(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean of each measure over all judged queries (a query the run misses scores 0)."""
    pq = per_query(qrels, run)
    return {name: sum(v.values()) / max(len(v), 1) for name, v in pq.items()}


def paired_test(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two-sided paired t-test and Wilcoxon signed-rank over the same queries (a vs b)."""
    qids = sorted(set(a) & set(b))
    xa = [a[q] for q in qids]
    xb = [b[q] for q in qids]
    t = stats.ttest_rel(xa, xb)
    diffs = [x - y for x, y in zip(xa, xb)]
    w_p = float(stats.wilcoxon(xa, xb).pvalue) if any(diffs) else 1.0
    return {
        "n": float(len(qids)),
        "mean_diff": sum(diffs) / max(len(diffs), 1),
        "t_pvalue": float(t.pvalue) if any(diffs) else 1.0,
        "wilcoxon_pvalue": w_p,
    }


def write_trec(run: Run, path: Path, tag: str) -> None:
    """`qid Q0 docid rank score tag`, ranks from 1 in score order."""
    lines: list[str] = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
        lines.extend(f"{qid} Q0 {d} {i} {s:.6f} {tag}\n" for i, (d, s) in enumerate(ranked, 1))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def read_trec(path: Path) -> Run:
    """A TREC run file (`qid Q0 docid rank score tag` per line, as `write_trec` writes) -> qid -> {docid: score}.

    Raises:
        DataError: naming the stage to run for a missing file, or the line of a malformed one.
    """
    if not path.exists():
        raise DataError(f"run file {path} not found: run the stage that writes it (see dvc.yaml)")
    run: Run = {}
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{path}:{lineno}: want 'qid Q0 docid rank score tag', got {line.strip()!r}")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from exc
    return run
