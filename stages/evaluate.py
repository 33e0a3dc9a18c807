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
from typing import Any

from kd import artifacts, tracking
from kd.atomic import write_text
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.models import teacher_corpus
from kd.models.runtime import configure_threads, corpus_encoder
from kd.models.teacher import BiEncoderTeacher, load_teacher
from kd.paths import cache_dir
from kd.retrieval import index
from kd.retrieval.evaluation import (
    eval_students,
    evaluate_split,
    served_latency,
    tracked_metrics,
    write_runs,
    write_tables,
)
from kd.retrieval.metrics import Run, read_trec

METRICS = Path("metrics.json")
SPLITS = ("dev", "test")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    loaded = index.load(artifacts.INDEX)
    teacher = load_teacher(p.teacher)
    view = None
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(artifacts.TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
    students = eval_students(artifacts.STUDENT, p.student, p.eval.backends)

    runs: dict[str, dict[str, Run]] = {}
    metrics: dict[str, Any] = {
        "student": p.student.name,
        "mode": "asymmetric" if p.index.passages == "teacher" else "symmetric",  # index.passages
        "queries": {s: len(ds.queries[s]) for s in SPLITS},
    }
    for split in SPLITS:
        fixed = {"bm25": read_trec(artifacts.bm25_run(split)), "untrained": read_trec(artifacts.baseline_run(split))}
        runs[split], metrics[split] = evaluate_split(
            p, ds.queries[split], ds.qrels[split], fixed, students, loaded, teacher, view, doc_text, cache_dir() / "teacher"
        )  # fmt: skip

    # what one query costs each model to encode, as the service runs it (its threads; the student on its backend)
    configure_threads(p.service.threads)
    queries = [q for split in SPLITS for q in ds.queries[split].values()]
    metrics["query_encode_ms"] = latency = served_latency(artifacts.STUDENT, p.student, teacher, queries)
    logging.info("query encode (service.threads=%s): %s", p.service.threads,
                 ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in latency.items()))  # fmt: skip

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
