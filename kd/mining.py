"""Hard-negative mining: candidates from BM25 (and optionally a dense run), teacher-filtered.

A candidate the teacher scores nearly as high as the positive is probably an unjudged relevant
passage (a false negative); training the student to push it down would teach it the wrong thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from kd.errors import DataError
from kd.metrics import Qrels, Run


@dataclass
class Candidates:
    """One training query's hard-negative candidates, before the teacher scores them.

    Attributes:
        qid: the query id.
        pos_id: the positive passage the group is built around (the best-ranked relevant one).
        cand_ids: candidate negatives in source order, each passage once, no relevant or held-out passage.
        sources: for each candidate, the run it came from (`bm25`, `dense`, `teacher`).
        positives: every relevant passage of the query (never a negative).
    """

    qid: str
    pos_id: str
    cand_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    positives: list[str] = field(default_factory=list)


def candidates(
    qrels: Qrels, runs: dict[str, Run], depth: int, exclude: set[str] | frozenset[str] = frozenset()
) -> list[Candidates]:
    """One group per judged query: its best-ranked positive plus the union of each run's top-`depth`.

    Positives of the query and `exclude` (e.g. passages judged for test queries, so no test
    answer text is trained on) never become candidates.
    """
    out = []
    first_run = next(iter(runs.values()), {})
    for qid in sorted(qrels):
        positives = {d for d, rel in qrels[qid].items() if rel > 0}
        if not positives:
            continue
        ranked = [d for d in sorted(first_run.get(qid, {}), key=lambda d: -first_run[qid][d]) if d in positives]
        pos_id = ranked[0] if ranked else sorted(positives)[0]
        group = Candidates(qid, pos_id, positives=sorted(positives))
        seen = set(positives) | set(exclude)
        for source, run in runs.items():
            top = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
            for docid, _ in top:
                if docid not in seen:
                    seen.add(docid)
                    group.cand_ids.append(docid)
                    group.sources.append(source)
        out.append(group)
    return out


def keep_mask(
    pos_score: float, cand_scores: list[float], fn_margin: float | None, fn_threshold: float | None
) -> list[bool]:
    """False for likely false negatives: above (positive - margin) or above an absolute threshold."""
    keep = []
    for s in cand_scores:
        bad = (fn_margin is not None and s > pos_score - fn_margin) or (
            fn_threshold is not None and s > fn_threshold
        )
        keep.append(not bad)
    return keep


def select(
    group: Candidates,
    pos_score: float,
    cand_scores: list[float],
    num_negatives: int,
    fn_margin: float | None,
    fn_threshold: float | None,
    pool: list[str],
    rng: random.Random,
) -> tuple[list[str], list[str]]:
    """The `num_negatives` hardest surviving candidates (by teacher score); pad with random passages.

    Fixed-size groups keep the loss a plain [B, G] tensor op.
    """
    mask = keep_mask(pos_score, cand_scores, fn_margin, fn_threshold)
    kept = [(s, d, src) for s, d, src, k in zip(cand_scores, group.cand_ids, group.sources, mask) if k]
    kept.sort(key=lambda x: (-x[0], x[1]))
    negs = [d for _, d, _ in kept[:num_negatives]]
    srcs = [src for _, _, src in kept[:num_negatives]]
    banned = {*group.positives, *group.cand_ids}
    if len(set(pool) - banned) < num_negatives - len(negs):
        raise DataError(
            f"only {len(set(pool) - banned)} passages can pad the group of query '{group.qid}' to "
            f"mining.num_negatives={num_negatives}: lower it or raise mining.depth"
        )
    while len(negs) < num_negatives:
        docid = pool[rng.randrange(len(pool))]
        if docid not in banned and docid not in negs:
            negs.append(docid)
            srcs.append("random")
    return negs, srcs
