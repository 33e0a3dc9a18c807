"""Stage `negatives`: training groups (query, positive, hard negatives), false negatives removed.

Queries: the judged training queries (a `mining.question_share` of them rewritten as questions by a
template, kd.pseudo), plus `mining.pseudo_queries` spans cropped from passages (kd.pseudo) whose
positive is the teacher's own top-1 over the whole corpus. Candidates: the
top-`mining.depth` of each run in `mining.sources` (`bm25`; `dense`, the untrained student's
ranking; `teacher`, the teacher's top-K over the corpus). Candidates are scored by the teacher
(dot products with the `teacher_corpus` matrix for a bi-encoder, pair scoring for a cross-encoder)
and the hardest survivors of the false-negative filter are kept. Passages judged for dev or test
queries are never candidates, padding, pseudo-query sources or positives.

Output columns: qid, query (text), pos_id, neg_ids, sources, teacher_q (the bi-encoder teacher's
query embedding, float32 list; empty for a cross-encoder), so later stages never re-encode queries.
"""

import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd

from kd import artifacts, mining, teacher_corpus
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import judged, passage_text, read_dataset
from kd.errors import DataError
from kd.metrics import Run, read_trec
from kd.paths import cache_dir
from kd.pseudo import pseudo_queries, rewrite_as_questions
from kd.teacher import BiEncoderTeacher, CachedTeacher, load_teacher

OUT = artifacts.NEGATIVES
TEACHER_CORPUS = artifacts.TEACHER_CORPUS


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    held_out = judged(ds.qrels)
    teacher = load_teacher(p.teacher)  # fail fast on a bad teacher
    queries = rewrite_as_questions(ds.queries["train"], p.mining.question_share, p.seed)
    qrels = {q: docs for q, docs in ds.qrels["train"].items()}
    runs: dict[str, Run] = {}
    files = {"bm25": artifacts.bm25_run("train"), "dense": artifacts.baseline_run("train")}
    for source in p.mining.sources:
        if source in files:
            runs[source] = read_trec(files[source])

    view = None
    q_emb: dict[str, np.ndarray] = {}
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
        pseudo = pseudo_queries(
            ds.corpus, held_out, p.mining.pseudo_queries, p.mining.pseudo_min_words, p.mining.pseudo_max_words, p.seed
        )
        queries.update({q: text for q, (text, _) in pseudo.items()})
        qids = sorted(queries)
        emb = teacher.encode_queries([queries[q] for q in qids], progress=True)
        q_emb = dict(zip(qids, emb))
        depth = max(p.mining.depth, 1) + 1  # +1: a pseudo-query's top-1 becomes its positive
        top = dict(zip(qids, view.top_k(emb, depth, exclude=held_out)))
        for q in pseudo:  # the teacher's own best passage is the positive; the rest are candidates
            if top[q]:
                qrels[q] = {top[q][0][0]: 1}
        if "teacher" in p.mining.sources:
            runs["teacher"] = {q: dict(top[q][: p.mining.depth + 1]) for q in qids}
        if pseudo:
            agree = sum(next(iter(qrels[q])) == src for q, (_, src) in pseudo.items() if q in qrels)
            logging.info("%d pseudo-queries; the teacher ranks the cropped passage first for %d", len(pseudo), agree)

    groups = mining.candidates(qrels, runs, p.mining.depth, held_out)
    if not groups:
        raise DataError("data/qrels/train.tsv has no judged training queries: raise data.max_train_queries")

    if view is not None:
        scores = [(view.rows([g.pos_id, *g.cand_ids]) @ q_emb[g.qid]).tolist() for g in groups]
    else:  # a cross-encoder scores every (query, candidate) pair, through the on-disk cache
        cached = CachedTeacher(teacher, cache_dir() / "teacher")
        qs = [queries[g.qid] for g in groups for _ in [g.pos_id, *g.cand_ids]]
        ps = [passage_text(ds.corpus[d]) for g in groups for d in [g.pos_id, *g.cand_ids]]
        flat = cached.score(qs, ps).tolist()
        scores, offset = [], 0
        for g in groups:
            n = 1 + len(g.cand_ids)
            scores.append(flat[offset : offset + n])
            offset += n

    rng = random.Random(p.seed)
    # pad short groups with other queries' candidates: in-domain, never held-out passages
    pool = sorted({d for g in groups for d in [g.pos_id, *g.cand_ids]} - held_out)
    rows, dropped = [], 0
    for g, s in zip(groups, scores):
        negs, srcs = mining.select(
            g, s[0], s[1:], p.mining.num_negatives, p.mining.fn_margin, p.mining.fn_threshold, pool, rng
        )
        dropped += sum(not k for k in mining.keep_mask(s[0], s[1:], p.mining.fn_margin, p.mining.fn_threshold))
        rows.append({
            "qid": g.qid, "query": queries[g.qid], "pos_id": g.pos_id, "neg_ids": negs, "sources": srcs,
            "teacher_q": q_emb[g.qid].astype(np.float32).tolist() if g.qid in q_emb else [],
        })  # fmt: skip
    df = pd.DataFrame(rows)
    with atomic_path(OUT) as tmp:
        df.to_parquet(tmp, index=False)
    n_cands = sum(len(g.cand_ids) for g in groups)
    logging.info("%d groups; %d of %d candidates dropped as likely false negatives", len(df), dropped, n_cands)


if __name__ == "__main__":
    run_stage("negatives", main)
