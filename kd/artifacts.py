"""Where each DVC stage writes its outputs: every `artifacts/` path, named once.

Stages, the service's defaults and the benches read these names; dvc.yaml declares the same paths as
stage outputs (tests/test_artifacts.py holds the two equal). Paths are relative to the pipeline's root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from kd.errors import DataError

ROOT: Final = Path("artifacts")
BM25: Final = ROOT / "bm25"  # stage bm25: the Lucene index and BM25 runs
BASELINE: Final = ROOT / "baseline"  # stage baseline: the untrained student's runs
TEACHER_CORPUS: Final = ROOT / "teacher_corpus"  # stage teacher_corpus: the teacher's passage matrix
NEGATIVES: Final = ROOT / "negatives.parquet"  # stage negatives: training groups (query, positive, negatives)
TEACHER_SCORES: Final = ROOT / "teacher_scores.parquet"  # stage teacher: the teacher's score of every group
STUDENT: Final = ROOT / "student"  # stage train: the distilled student (a sentence-transformers folder)
TRAIN: Final = ROOT / "train"  # stage train: curves, the kept epoch, the MLflow run id
INDEX: Final = ROOT / "index"  # stage index: the FAISS index and its docids
RUNS: Final = ROOT / "runs"  # stage evaluate: TREC runs of every system
EVAL: Final = ROOT / "eval"  # stage evaluate: the tables
MLFLOW_RUN: Final = TRAIN / "mlflow_run.json"  # train writes it; evaluate logs into that run


def bm25_run(split: str) -> Path:
    """BM25's TREC run of `split` (train, dev or test)."""
    return BM25 / "runs" / f"{split}.trec"


def baseline_run(split: str) -> Path:
    """The untrained student's TREC run of `split` (train, dev or test)."""
    return BASELINE / "runs" / f"{split}.trec"


def require(path: Path, stage: str) -> Path:
    """`path` if it exists, else a DataError naming the stage that writes it."""
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc repro {stage}` first")
    return path
