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
import pandas as pd

from kd import artifacts, compute
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.distill.teacher_scores import normalize_groups, normalize_scores, score_groups
from kd.errors import DataError
from kd.models import teacher_corpus
from kd.models.teacher import BiEncoderTeacher, load_teacher, model_key
from kd.models.teacher_cache import CachedTeacher
from kd.paths import cache_dir

NEGATIVES = artifacts.NEGATIVES
TEACHER_CORPUS = artifacts.TEACHER_CORPUS
OUT = artifacts.TEACHER_SCORES


def main(p: Params) -> None:
    normalize_scores(np.array([0.0, 1.0]), p.teacher.score_norm, p.teacher.score_scale)  # a bad setting fails first
    if not NEGATIVES.exists():
        raise DataError(f"{NEGATIVES} not found: run `dvc repro negatives` first")
    groups = pd.read_parquet(NEGATIVES)
    if groups.empty:
        raise DataError(f"{NEGATIVES} is empty: check mining params, then `dvc repro negatives`")
    ds = read_dataset(Path("data"))
    query_text = dict(ds.queries["train"])
    if "query" in groups.columns:  # the negatives stage stores each group's query text (pseudo-queries too)
        query_text.update(zip(groups["qid"].astype(str), groups["query"]))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    raw = load_teacher(p.teacher)
    view = None
    if isinstance(raw, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
    compute.check(p.compute)
    teacher: CachedTeacher | compute.PairScorer = CachedTeacher(raw, cache_dir() / "teacher")
    if view is None and p.compute.backend != "local":  # a cross-encoder's pairs go to the Ray actor pool
        teacher = compute.PairScorer(compute.ModelSpec.teacher(p.teacher), p.compute)
    salt = hashlib.sha1(NEGATIVES.read_bytes()).hexdigest() + "|" + model_key(p.teacher)
    scores = score_groups(
        groups, query_text, doc_text, teacher, cache_dir() / "teacher_chunks", salt, p.teacher.chunk_groups, view
    )
    margins = np.array([s[0] - max(s[1:]) for s in scores["scores"]]) if len(scores) else np.zeros(0)
    spread = np.array([np.std(s) for s in scores["scores"]]) if len(scores) else np.zeros(0)
    logging.info("%d groups scored (%s); raw positive-vs-hardest margin %.4f, within-group std %.4f",
                 len(scores), "passage matrix" if view is not None else "pairs",
                 margins.mean() if margins.size else float("nan"), spread.mean() if spread.size else float("nan"))  # fmt: skip
    out = normalize_groups(scores, p.teacher)
    with atomic_path(OUT) as tmp:
        out.to_parquet(tmp, index=False)
    if p.teacher.score_norm != "none":
        logging.info("scores standardised per group (teacher.score_norm=%s, std %g)", p.teacher.score_norm, p.teacher.score_scale)


if __name__ == "__main__":
    run_stage("teacher", main)
