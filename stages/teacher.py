"""Stage `teacher`: teacher scores for every (query, positive + negatives) group, resumable.

A bi-encoder teacher scores a group as its query embedding (cached) dotted with the passages' rows
of the `teacher_corpus` matrix: no passage is encoded again. A cross-encoder scores each pair, in
this process or, with `compute=ray`, on the Ray actor pool (`kd.compute.score_pairs`).
Chunks are kept under <cache>/teacher_chunks/<hash of the groups' texts and the teacher>/, so a
killed run picks up where it stopped. The written scores are put on the student's scale per group
(`teacher.score_norm`, `teacher.score_scale`); the kept chunks hold the raw numbers.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np

from kd import artifacts, compute
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.distill import teacher_scores as ts
from kd.models.teacher import load_with_matrix, model_key
from kd.models.teacher_cache import CachedTeacher
from kd.paths import cache_dir

NEGATIVES = artifacts.NEGATIVES
OUT = artifacts.TEACHER_SCORES


def main(p: Params) -> None:
    ts.normalize_scores(np.array([0.0, 1.0]), p.teacher.score_norm, p.teacher.score_scale)  # a bad setting fails first
    groups = ts.read_groups(NEGATIVES)
    ds = read_dataset(Path("data"))
    raw, view = load_with_matrix(p.teacher, artifacts.TEACHER_CORPUS, sorted(ds.corpus))
    compute.check(p.compute)
    teacher: CachedTeacher | compute.PairScorer = CachedTeacher(raw, cache_dir() / "teacher")
    if view is None and p.compute.backend != "local":  # a cross-encoder's pairs go to the Ray actor pool
        teacher = compute.PairScorer(compute.ModelSpec.teacher(p.teacher), p.compute)
    salt = hashlib.sha1(NEGATIVES.read_bytes()).hexdigest() + "|" + model_key(p.teacher)
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    query_text = ts.group_queries(groups, ds.queries["train"])
    chunks = cache_dir() / "teacher_chunks"
    scores = ts.score_groups(groups, query_text, doc_text, teacher, chunks, salt, p.teacher.chunk_groups, view)
    mode = "pairs" if view is None else "passage matrix"
    logging.info("%d groups scored (%s); %s", len(scores), mode, ts.describe(scores))
    with atomic_path(OUT) as tmp:
        ts.normalize_groups(scores, p.teacher).to_parquet(tmp, index=False)
    if p.teacher.score_norm != "none":
        logging.info("scores standardised per group (teacher.score_norm=%s, std %g)", p.teacher.score_norm,
                     p.teacher.score_scale)  # fmt: skip


if __name__ == "__main__":
    run_stage("teacher", main)
