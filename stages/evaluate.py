"""Stage `evaluate`: full-corpus retrieval for the held-out dev and test queries, one table each.

Systems: BM25; untrained student; KD student (FAISS); KD student + teacher rerank of its top-K;
the teacher alone over the full corpus (a bi-encoder teacher, from the `teacher_corpus` matrix).
Dev is what every choice was made on; test is computed here only and chooses nothing.
Paired significance: KD vs untrained on per-query nDCG@10, per split; bootstrap intervals (questions
resampled) for KD / teacher and the gap closed, so a reader sees how much a ratio owes to the question sample.
"""

import json
import logging
from pathlib import Path

from kd import artifacts, tracking
from kd.atomic import write_text
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import read_dataset
from kd.models.runtime import corpus_encoder
from kd.models.teacher import load_with_matrix
from kd.paths import cache_dir
from kd.retrieval import index
from kd.retrieval.evaluation import SPLITS, evaluate, write_runs
from kd.retrieval.metrics import read_trec
from kd.retrieval.report import tracked_metrics, write_tables

METRICS = Path("metrics.json")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    teacher, view = load_with_matrix(p.teacher, artifacts.TEACHER_CORPUS, sorted(ds.corpus))
    fixed = {  # the runs computed upstream, in table order
        s: {"bm25": read_trec(artifacts.bm25_run(s)), "untrained": read_trec(artifacts.baseline_run(s))} for s in SPLITS
    }
    loaded = index.load(artifacts.INDEX)
    runs, metrics = evaluate(p, ds, loaded, teacher, view, artifacts.STUDENT, fixed, cache_dir() / "teacher")
    write_runs(artifacts.RUNS, runs)
    write_text(METRICS, json.dumps(metrics, indent=2) + "\n")
    md = write_tables(artifacts.EVAL, metrics, len(ds.corpus), corpus_encoder(p))
    with tracking.run("evaluate", p, run_id_file=tracking.RUN_ID_FILE, resume=True) as tr:
        tr.metrics(tracked_metrics(metrics))
        tr.artifact(artifacts.EVAL)
        tr.artifact(METRICS)
    logging.info("\n%s", md)


if __name__ == "__main__":
    run_stage("evaluate", main)
