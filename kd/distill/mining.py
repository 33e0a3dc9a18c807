"""Hard-negative mining (stage `negatives`): candidates from BM25, the untrained student and the teacher,
scored by the teacher, false negatives filtered, groups padded to a fixed size.

A candidate the teacher scores nearly as high as the positive is probably an unjudged relevant
passage (a false negative); training the student to push it down would teach it the wrong thing.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kd.config import MiningConfig
from kd.data.io import Dataset, judged, passage_text
from kd.distill.pseudo import pseudo_queries, rewrite_as_questions
from kd.errors import DataError
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher
from kd.models.teacher_cache import CachedTeacher
from kd.models.teacher_corpus import TeacherCorpus
from kd.retrieval.metrics import Qrels, Run
from kd.retrieval.search import score_matrix_groups, score_text_groups

log = logging.getLogger(__name__)


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


@dataclass
class TeacherView:
    """What a bi-encoder teacher adds to mining, from its passage matrix (stage `teacher_corpus`).

    Attributes:
        queries: pseudo-query id -> text (spans cropped from passages: `kd.distill.pseudo.pseudo_queries`).
        qrels: pseudo-query id -> {the teacher's own top-1 passage: 1}.
        run: the teacher's top-(depth + 1) of every query (training and pseudo), a candidate source.
        q_emb: every query's teacher embedding, kept in the output so later stages never re-encode.
    """

    queries: dict[str, str]
    qrels: Qrels
    run: Run
    q_emb: dict[str, np.ndarray]


def teacher_view(
    teacher: BiEncoderTeacher,
    view: TeacherCorpus,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    held_out: set[str],
    cfg: MiningConfig,
    seed: int,
) -> TeacherView:
    """Pseudo-queries with the teacher's top-1 as positive, and the teacher's ranking of every query.

    Passages in `held_out` (judged for dev or test) are never a pseudo-query's source, positive or candidate.
    """
    pseudo = pseudo_queries(corpus, held_out, cfg.pseudo_queries, cfg.pseudo_min_words, cfg.pseudo_max_words, seed)
    pseudo_text = {q: text for q, (text, _) in pseudo.items()}
    texts = {**queries, **pseudo_text}
    qids = sorted(texts)
    emb = teacher.encode_queries([texts[q] for q in qids], progress=True)
    depth = max(cfg.depth, 1) + 1  # +1: a pseudo-query's top-1 becomes its positive
    top = dict(zip(qids, view.top_k(emb, depth, exclude=held_out)))
    qrels = {q: {top[q][0][0]: 1} for q in pseudo if top[q]}  # the teacher's own best passage is the positive
    if pseudo:
        agree = sum(next(iter(qrels[q])) == src for q, (_, src) in pseudo.items() if q in qrels)
        log.info("%d pseudo-queries; the teacher ranks the cropped passage first for %d", len(pseudo), agree)
    run = {q: dict(top[q][: cfg.depth + 1]) for q in qids}
    return TeacherView(pseudo_text, qrels, run, dict(zip(qids, emb)))


def score_candidates(
    groups: list[Candidates],
    queries: dict[str, str],
    corpus: dict[str, dict[str, str]],
    teacher: CachedTeacher | None,
    view: TeacherCorpus | None,
    q_emb: dict[str, np.ndarray],
) -> list[list[float]]:
    """The teacher's score of each group's positive then candidates: dot products with its passage matrix
    (a bi-encoder with `view`), else pair scores through the on-disk cache (a cross-encoder)."""
    members = [[g.pos_id, *g.cand_ids] for g in groups]
    if view is not None:
        scores = score_matrix_groups([q_emb[g.qid] for g in groups], [view.rows(m) for m in members])
    elif teacher is not None:
        passages = [[passage_text(corpus[d]) for d in m] for m in members]
        scores = score_text_groups(teacher.score, [queries[g.qid] for g in groups], passages)
    else:
        raise TypeError("score_candidates needs the teacher's passage matrix (view) or a pair scorer (teacher)")
    return [s.tolist() for s in scores]


def training_groups(
    groups: list[Candidates],
    scores: list[list[float]],
    queries: dict[str, str],
    q_emb: dict[str, np.ndarray],
    held_out: set[str],
    cfg: MiningConfig,
    seed: int,
) -> tuple[pd.DataFrame, int]:
    """The negatives parquet's rows (qid, query, pos_id, neg_ids, sources, teacher_q) and how many
    candidates the false-negative filter dropped. Short groups are padded with other queries'
    candidates: in-domain, never held-out passages."""
    rng = random.Random(seed)
    pool = sorted({d for g in groups for d in [g.pos_id, *g.cand_ids]} - held_out)
    rows, dropped = [], 0
    for g, s in zip(groups, scores):
        negs, srcs = select(g, s[0], s[1:], cfg.num_negatives, cfg.fn_margin, cfg.fn_threshold, pool, rng)
        dropped += sum(not k for k in keep_mask(s[0], s[1:], cfg.fn_margin, cfg.fn_threshold))
        rows.append({
            "qid": g.qid, "query": queries[g.qid], "pos_id": g.pos_id, "neg_ids": negs, "sources": srcs,
            "teacher_q": q_emb[g.qid].astype(np.float32).tolist() if g.qid in q_emb else [],
        })  # fmt: skip
    return pd.DataFrame(rows), dropped


def mine(
    cfg: MiningConfig,
    seed: int,
    ds: Dataset,
    runs: dict[str, Run],
    teacher: BiEncoderTeacher | CrossEncoderTeacher,
    view: TeacherCorpus | None,
    cache_root: Path,
) -> pd.DataFrame:
    """The training groups of stage `negatives`, from the judged training queries and the `runs` read upstream.

    A `mining.question_share` of the queries is rewritten as questions. With the teacher's passage
    matrix (`view`, a bi-encoder teacher) `teacher_view` adds its pseudo-queries, its own run (when
    `teacher` is in `mining.sources`) and each query's embedding, and candidates are scored by dot
    products; else (a cross-encoder) by pair scores cached under `cache_root`. Passages judged for
    dev or test never enter a group.

    Raises:
        DataError: no judged training query (the fix: `data.max_train_queries`).
    """
    held_out = judged(ds.qrels)
    queries = rewrite_as_questions(ds.queries["train"], cfg.question_share, seed)
    qrels = dict(ds.qrels["train"])
    q_emb: dict[str, np.ndarray] = {}
    if view is not None and isinstance(teacher, BiEncoderTeacher):
        seen = teacher_view(teacher, view, ds.corpus, queries, held_out, cfg, seed)
        queries.update(seen.queries)
        qrels.update(seen.qrels)
        q_emb = seen.q_emb
        if "teacher" in cfg.sources:
            runs = {**runs, "teacher": seen.run}
    groups = candidates(qrels, runs, cfg.depth, held_out)
    if not groups:
        raise DataError("data/qrels/train.tsv has no judged training queries: raise data.max_train_queries")
    cached = CachedTeacher(teacher, cache_root) if view is None else None  # pair scores, cached
    scores = score_candidates(groups, queries, ds.corpus, cached, view, q_emb)
    df, dropped = training_groups(groups, scores, queries, q_emb, held_out, cfg, seed)
    n_cands = sum(len(g.cand_ids) for g in groups)
    log.info("%d groups; %d of %d candidates dropped as likely false negatives", len(df), dropped, n_cands)
    return df
