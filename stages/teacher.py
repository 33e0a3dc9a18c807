"""Stage `teacher`: teacher scores for every (query, positive + negatives) group, resumable.

Chunks are kept under <cache>/teacher_chunks/<fingerprint of inputs>/ until the inputs change,
so a killed run picks up where it stopped.
"""

import hashlib
import logging
from pathlib import Path

import pandas as pd

from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.errors import DataError
from kd.models import load_teacher
from kd.paths import cache_dir
from kd.teacher import CachedTeacher, model_key, score_groups

NEGATIVES = Path("artifacts/negatives.parquet")
OUT = Path("artifacts/teacher_scores.parquet")


def main(p: Params) -> None:
    if not NEGATIVES.exists():
        raise DataError(f"{NEGATIVES} not found: run `dvc repro negatives` first")
    groups = pd.read_parquet(NEGATIVES)
    if groups.empty:
        raise DataError(f"{NEGATIVES} is empty: check mining params, then `dvc repro negatives`")
    ds = read_dataset(Path("data"))
    fingerprint = hashlib.sha1(NEGATIVES.read_bytes() + model_key(p.teacher).encode()).hexdigest()[:16]
    teacher = CachedTeacher(load_teacher(p.teacher), cache_dir() / "teacher")
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    scores = score_groups(
        groups, ds.queries["train"], doc_text, teacher, cache_dir() / "teacher_chunks", fingerprint, p.teacher.chunk_groups
    )
    with atomic_path(OUT) as tmp:
        scores.to_parquet(tmp, index=False)
    margins = [s[0] - max(s[1:]) for s in scores["scores"]]
    logging.info("%d groups scored; mean positive-vs-hardest margin %.4f", len(scores), sum(margins) / len(margins))


if __name__ == "__main__":
    run_stage("teacher", main)
