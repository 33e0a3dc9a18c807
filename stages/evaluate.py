"""Stage `evaluate`: full-corpus retrieval for the held-out test queries, one table.

Systems: BM25; untrained student; KD student (FAISS); KD student + teacher rerank of its top-K;
the teacher alone over the full corpus when `eval.teacher_alone` (a bi-encoder teacher only).
Paired significance: KD vs untrained on per-query nDCG@10.
"""

import csv
import json
import logging
from pathlib import Path

import numpy as np

from kd import index, tracking
from kd.atomic import atomic_dir, atomic_path, write_text
from kd.backends import corpus_encoder, load_student
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.evaluation import markdown_table, rerank
from kd.metrics import MEASURES, Run, evaluate, paired_test, per_query, read_trec, write_trec
from kd.models import BiEncoderTeacher, encode, load_teacher
from kd.paths import cache_dir
from kd.teacher import CachedTeacher

STUDENT = Path("artifacts/student")
RUNS = Path("artifacts/runs")
EVAL = Path("artifacts/eval")
METRICS = Path("metrics.json")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    queries, qrels = ds.queries["test"], ds.qrels["test"]
    qids = list(queries)
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    runs: dict[str, Run] = {
        "bm25": read_trec(Path("artifacts/bm25/runs/test.trec")),
        "untrained": read_trec(Path("artifacts/baseline/runs/test.trec")),
    }
    loaded = index.load(Path("artifacts/index"))
    texts = [queries[q] for q in qids]
    backend_runs: dict[str, Run] = {}
    for backend in dict.fromkeys([p.student.backend, *p.eval.backends]):  # same index, each query encoder
        student = load_student(STUDENT, backend, p.student.max_seq_length)
        q_emb = encode(student, texts, p.student.query_prefix, p.student.batch_size)
        backend_runs[backend] = index.to_run(qids, index.search(loaded.index, q_emb, loaded.docids, p.eval.depth))
    runs["kd"] = backend_runs[p.student.backend]
    teacher = CachedTeacher(load_teacher(p.teacher), cache_dir() / "teacher")
    runs[f"kd+rerank@{p.eval.rerank_depth}"] = rerank(runs["kd"], p.eval.rerank_depth, queries, doc_text, teacher)
    if p.eval.teacher_alone:
        if isinstance(teacher.teacher, BiEncoderTeacher):
            docids = sorted(ds.corpus)
            scores = np.stack(
                [teacher.score([queries[q]] * len(docids), [doc_text[d] for d in docids], progress=i == 0)
                 for i, q in enumerate(qids)]
            )  # fmt: skip
            top = np.argsort(-scores, axis=1)[:, : p.eval.depth]
            runs["teacher"] = {q: {docids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
        else:
            logging.warning("eval.teacher_alone skipped: a cross-encoder over the full corpus is not affordable")

    table = {name: evaluate(qrels, run) for name, run in runs.items()}
    by_backend = {b: evaluate(qrels, run)["nDCG@10"] for b, run in backend_runs.items()}
    pq = {name: per_query(qrels, run)["nDCG@10"] for name, run in runs.items()}
    sig = paired_test(pq["kd"], pq["untrained"])
    metrics: dict[str, object] = {
        "test": table,
        "kd_vs_untrained_ndcg@10": sig,
        "kd_ndcg@10_by_query_backend": by_backend,
        "queries": len(qids),
    }
    if "teacher" in table:
        gap = table["teacher"]["nDCG@10"] - table["untrained"]["nDCG@10"]
        metrics["gap_closed"] = (table["kd"]["nDCG@10"] - table["untrained"]["nDCG@10"]) / gap if gap else 0.0

    with atomic_dir(RUNS) as tmp:
        for name, run in runs.items():
            write_trec(run, tmp / f"{name.replace('@', '_at_').replace('+', '_')}.trec", name)
    write_text(METRICS, json.dumps(metrics, indent=2) + "\n")
    columns = list(MEASURES)
    with atomic_path(EVAL / "table.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["system", *columns])
        writer.writerows([name, *(round(table[name][c], 4) for c in columns)] for name in table)
    md = markdown_table(table, columns)
    md += f"\nKD vs untrained nDCG@10: diff {sig['mean_diff']:+.4f}, paired t p={sig['t_pvalue']:.3g}, "
    md += f"Wilcoxon p={sig['wilcoxon_pvalue']:.3g} (n={int(sig['n'])})\n"
    md += "\nKD student nDCG@10 by query-encoder backend (corpus encoded with "
    md += f"{corpus_encoder(p)}): " + ", ".join(f"{b} {v:.4f}" for b, v in by_backend.items()) + "\n"
    write_text(EVAL / "table.md", md)
    with tracking.run("evaluate", p) as tr:
        for name, values in table.items():
            tr.metrics(values, prefix=f"{name}.")
        tr.metrics({"kd_vs_untrained_t_pvalue": sig["t_pvalue"], "kd_vs_untrained_diff": sig["mean_diff"]})
        tr.metrics(by_backend, prefix="kd_ndcg_at_10.backend.")
        tr.artifact(EVAL)
        tr.artifact(METRICS)
    print(md)


if __name__ == "__main__":
    run_stage("evaluate", main)
