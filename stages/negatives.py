"""Stage `negatives`: training groups (query, positive, hard negatives), false negatives removed.

Queries: the judged training queries (a `mining.question_share` of them rewritten as questions by a
template, kd.distill.pseudo), plus `mining.pseudo_queries` spans cropped from passages (kd.distill.pseudo) whose
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
from pathlib import Path

import numpy as np

from kd import artifacts
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import judged, read_dataset
from kd.distill import mining
from kd.distill.pseudo import rewrite_as_questions
from kd.errors import DataError
from kd.models import teacher_corpus
from kd.models.teacher import BiEncoderTeacher, load_teacher
from kd.models.teacher_cache import CachedTeacher
from kd.paths import cache_dir
from kd.retrieval.metrics import Run, read_trec

OUT = artifacts.NEGATIVES
TEACHER_CORPUS = artifacts.TEACHER_CORPUS


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    held_out = judged(ds.qrels)
    teacher = load_teacher(p.teacher)  # fail fast on a bad teacher
    queries = rewrite_as_questions(ds.queries["train"], p.mining.question_share, p.seed)
    qrels = dict(ds.qrels["train"])
    files = {"bm25": artifacts.bm25_run("train"), "dense": artifacts.baseline_run("train")}
    runs: dict[str, Run] = {s: read_trec(files[s]) for s in p.mining.sources if s in files}
    view = None
    q_emb: dict[str, np.ndarray] = {}
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
        seen = mining.teacher_view(teacher, view, ds.corpus, queries, held_out, p.mining, p.seed)
        queries.update(seen.queries)
        qrels.update(seen.qrels)
        q_emb = seen.q_emb
        if "teacher" in p.mining.sources:
            runs["teacher"] = seen.run

    groups = mining.candidates(qrels, runs, p.mining.depth, held_out)
    if not groups:
        raise DataError("data/qrels/train.tsv has no judged training queries: raise data.max_train_queries")
    cached = CachedTeacher(teacher, cache_dir() / "teacher") if view is None else None  # pair scores, cached
    scores = mining.score_candidates(groups, queries, ds.corpus, cached, view, q_emb)
    df, dropped = mining.training_groups(groups, scores, queries, q_emb, held_out, p.mining, p.seed)
    with atomic_path(OUT) as tmp:
        df.to_parquet(tmp, index=False)
    n_cands = sum(len(g.cand_ids) for g in groups)
    logging.info("%d groups; %d of %d candidates dropped as likely false negatives", len(df), dropped, n_cands)


if __name__ == "__main__":
    run_stage("negatives", main)
