"""Stage `evaluate`: full-corpus retrieval for the held-out dev and test queries, one table each.

Systems: BM25; untrained student; KD student (FAISS); KD student + teacher rerank of its top-K;
the teacher alone over the full corpus (a bi-encoder teacher, from the `teacher_corpus` matrix).
Dev is what every choice was made on; test is computed here only and chooses nothing.
Paired significance: KD vs untrained on per-query nDCG@10, per split; bootstrap intervals (questions
resampled) for KD / teacher and the gap closed, so a reader sees how much a ratio owes to the question sample.
"""

import csv
import json
import logging
from pathlib import Path
from typing import Any

from kd import artifacts, tracking
from kd.atomic import atomic_path, write_text
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
    report_markdown,
    served_latency,
    split_summary,
    split_systems,
    student_runs,
    table_rows,
    teacher_systems,
    tracked_metrics,
    write_runs,
)
from kd.retrieval.metrics import MEASURES, Run, evaluate, per_query, read_trec

STUDENT = artifacts.STUDENT
RUNS = artifacts.RUNS
EVAL = artifacts.EVAL
METRICS = Path("metrics.json")
TEACHER_CORPUS = artifacts.TEACHER_CORPUS
SPLITS = ("dev", "test")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    loaded = index.load(artifacts.INDEX)
    teacher = load_teacher(p.teacher)
    view = None
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
    students = eval_students(STUDENT, p.student, p.eval.backends)

    runs: dict[str, dict[str, Run]] = {}
    metrics: dict[str, Any] = {
        "student": p.student.name,
        "mode": "asymmetric" if p.index.passages == "teacher" else "symmetric",  # index.passages
        "queries": {s: len(ds.queries[s]) for s in SPLITS},
    }
    for split in SPLITS:
        queries, qrels = ds.queries[split], ds.qrels[split]
        fixed = {"bm25": read_trec(artifacts.bm25_run(split)), "untrained": read_trec(artifacts.baseline_run(split))}
        by_backend = student_runs(queries, students, p.student, loaded, p.eval.depth)
        teacher_side = teacher_systems(queries, teacher, view, doc_text, cache_dir() / "teacher", p.eval.depth)
        runs[split] = split_systems(fixed, by_backend, p.student.backend, teacher_side, p.eval.rerank_depth)
        table = {name: evaluate(qrels, run) for name, run in runs[split].items()}
        summary = split_summary(table, {name: per_query(qrels, run)["nDCG@10"] for name, run in runs[split].items()})
        summary["kd_ndcg@10_by_query_backend"] = {b: evaluate(qrels, run)["nDCG@10"] for b, run in by_backend.items()}
        metrics[split] = {"table": table, **summary}  # dev chooses a backend (e.g. int8), test reports it

    # what one query costs each model to encode, as the service runs it (its threads; the student on its backend)
    configure_threads(p.service.threads)
    latency = served_latency(STUDENT, p.student, teacher, [q for split in SPLITS for q in ds.queries[split].values()])
    metrics["query_encode_ms"] = latency
    logging.info("query encode (service.threads=%s): %s", p.service.threads,
                 ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in latency.items()))  # fmt: skip

    write_runs(RUNS, runs)
    write_text(METRICS, json.dumps(metrics, indent=2) + "\n")
    columns = list(MEASURES)
    with atomic_path(EVAL / "table.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "system", *columns])
        writer.writerows(table_rows(metrics, columns))
    md = report_markdown(metrics, len(ds.corpus), corpus_encoder(p), columns)
    write_text(EVAL / "table.md", md)
    with tracking.run("evaluate", p, run_id_file=tracking.RUN_ID_FILE, resume=True) as tr:
        tr.metrics(tracked_metrics(metrics))
        tr.artifact(EVAL)
        tr.artifact(METRICS)
    logging.info("\n%s", md)


if __name__ == "__main__":
    run_stage("evaluate", main)
