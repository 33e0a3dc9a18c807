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

from kd import artifacts, index, teacher_corpus, tracking
from kd.atomic import atomic_dir, atomic_path, write_text
from kd.backends import load_student, query_encode_ms, query_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.evaluation import (
    PairScorer,
    gap_intervals,
    gap_summary,
    markdown_table,
    rerank,
    teacher_run,
    text_pair_scorer,
    view_pair_scorer,
)
from kd.metrics import MEASURES, Run, evaluate, paired_test, per_query, read_trec, write_trec
from kd.models import check_prompts, encode
from kd.paths import cache_dir
from kd.runtime import configure_threads, corpus_encoder, use_bf16
from kd.teacher import BiEncoderTeacher, CachedTeacher, load_teacher

STUDENT = artifacts.STUDENT
RUNS = artifacts.RUNS
EVAL = artifacts.EVAL
METRICS = Path("metrics.json")
TEACHER_CORPUS = artifacts.TEACHER_CORPUS
SPLITS = ("dev", "test")
NOT_COMPUTED = "not computed: a cross-encoder teacher has no passage embeddings to search the corpus with"


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    loaded = index.load(artifacts.INDEX)
    teacher = load_teacher(p.teacher)
    view = None
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
    backends = list(dict.fromkeys([p.student.backend, *p.eval.backends]))
    if p.student.kind == "static":  # an embedding lookup has no ONNX export: torch is its only backend
        skipped = [b for b in backends if b != "torch"]
        backends = ["torch"]
        if skipped:
            logging.info("eval.backends: %s skipped for a static student (torch only)", ", ".join(skipped))
    students = {b: load_student(STUDENT, b, p.student.max_seq_length) for b in backends}
    for student in students.values():
        check_prompts(student, p.student, str(STUDENT))
    rerank_name = f"kd+rerank@{p.eval.rerank_depth}"

    runs: dict[str, dict[str, Run]] = {}
    tables: dict[str, dict[str, dict[str, float]]] = {}
    metrics: dict[str, object] = {
        "student": p.student.name,
        "mode": "asymmetric" if p.index.passages == "teacher" else "symmetric",  # index.passages
        "queries": {s: len(ds.queries[s]) for s in SPLITS},
    }
    for split in SPLITS:
        queries, qrels = ds.queries[split], ds.qrels[split]
        qids = list(queries)
        texts = [queries[q] for q in qids]
        split_runs: dict[str, Run] = {
            "bm25": read_trec(artifacts.bm25_run(split)),
            "untrained": read_trec(artifacts.baseline_run(split)),
        }
        backend_runs: dict[str, Run] = {}
        for backend, student in students.items():  # same index, each query encoder
            q_emb = encode(student, texts, p.student.query_prefix, p.student.batch_size)
            backend_runs[backend] = index.to_run(qids, index.search(loaded.index, q_emb, loaded.docids, p.eval.depth))
        split_runs["kd"] = backend_runs[p.student.backend]
        scorer: PairScorer
        if view is not None and isinstance(teacher, BiEncoderTeacher):
            t_emb = dict(zip(qids, teacher.encode_queries(texts)))
            scorer = view_pair_scorer(t_emb, view)
            split_runs["teacher"] = teacher_run(t_emb, view, p.eval.depth)
        else:
            scorer = text_pair_scorer(queries, doc_text, CachedTeacher(teacher, cache_dir() / "teacher"))
        split_runs[rerank_name] = rerank(split_runs["kd"], p.eval.rerank_depth, scorer)
        runs[split] = split_runs
        tables[split] = {name: evaluate(qrels, run) for name, run in split_runs.items()}
        pq = {name: per_query(qrels, run)["nDCG@10"] for name, run in split_runs.items()}
        summary: dict[str, object] = {"kd_vs_untrained_ndcg@10": paired_test(pq["kd"], pq["untrained"])}
        if "teacher" in tables[split]:
            summary.update({**gap_summary(tables[split]), **gap_intervals(pq)})
        else:
            summary["teacher_alone"] = NOT_COMPUTED
        summary["kd_ndcg@10_by_query_backend"] = {b: evaluate(qrels, run)["nDCG@10"] for b, run in backend_runs.items()}
        metrics[split] = {"table": tables[split], **summary}  # dev chooses a backend (e.g. int8), test reports it

    # what one query costs each model to encode, as the service runs it (its threads; the student on its backend)
    configure_threads(p.service.threads)
    sample = [q for split in SPLITS for q in ds.queries[split].values()]
    served = load_student(STUDENT, p.student.backend, p.student.max_seq_length)
    latency = {f"student_{p.student.backend}": query_encode_ms(query_path(served, p.student.query_prefix), sample)}
    if isinstance(teacher, BiEncoderTeacher):
        dtype = "bfloat16" if use_bf16(p.teacher.dtype) else "float32"
        latency[f"teacher_torch_{dtype}"] = query_encode_ms(teacher.encode_queries, sample)
    metrics["query_encode_ms"] = latency
    logging.info("query encode (service.threads=%s): %s", p.service.threads,
                 ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in latency.items()))  # fmt: skip

    with atomic_dir(RUNS) as tmp:
        for split, split_runs in runs.items():
            for name, run in split_runs.items():
                write_trec(run, tmp / split / f"{name.replace('@', '_at_').replace('+', '_')}.trec", name)
    write_text(METRICS, json.dumps(metrics, indent=2) + "\n")
    columns = list(MEASURES)
    with atomic_path(EVAL / "table.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "system", *columns])
        writer.writerows([s, name, *(round(tables[s][name][c], 4) for c in columns)] for s in SPLITS for name in tables[s])
    md = ""
    for split in SPLITS:
        m = metrics[split]
        assert isinstance(m, dict)
        sig = m["kd_vs_untrained_ndcg@10"]
        md += f"### {split} ({len(ds.queries[split])} queries, full corpus of {len(ds.corpus)} passages)\n\n"
        md += markdown_table(tables[split], columns)
        md += f"\nKD vs untrained nDCG@10: diff {sig['mean_diff']:+.4f}, paired t p={sig['t_pvalue']:.3g}, "
        md += f"Wilcoxon p={sig['wilcoxon_pvalue']:.3g} (n={int(sig['n'])})"
        if "gap_closed" in m:
            ratio, closed = m["student_over_teacher_ci95"], m["gap_closed_ci95"]
            md += f"; KD / teacher {m['student_over_teacher']:.1%} (95% CI over questions {ratio[0]:.1%} to {ratio[1]:.1%}), "
            md += f"gap closed {m['gap_closed']:.1%} ({closed[0]:.1%} to {closed[1]:.1%})\n\n"
        else:
            md += f"; teacher alone {NOT_COMPUTED}\n\n"
        md += f"KD nDCG@10 by query-encoder backend (corpus encoded with {corpus_encoder(p)}): "
        md += ", ".join(f"{b} {v:.4f}" for b, v in m["kd_ndcg@10_by_query_backend"].items()) + "\n\n"
    write_text(EVAL / "table.md", md)
    with tracking.run("evaluate", p, run_id_file=tracking.RUN_ID_FILE, resume=True) as tr:
        for split in SPLITS:
            for name, values in tables[split].items():
                tr.metrics(values, prefix=f"{split}.{name}.")
            m = metrics[split]
            assert isinstance(m, dict)
            tr.metrics({k: float(v) for k, v in m.items() if k in ("gap_closed", "student_over_teacher")}, prefix=f"{split}.")
            for key in ("gap_closed_ci95", "student_over_teacher_ci95"):
                if key in m:
                    tr.metrics({f"{key}_low": m[key][0], f"{key}_high": m[key][1]}, prefix=f"{split}.")
            tr.metrics({"kd_vs_untrained_t_pvalue": m["kd_vs_untrained_ndcg@10"]["t_pvalue"]}, prefix=f"{split}.")
            tr.metrics(m["kd_ndcg@10_by_query_backend"], prefix=f"{split}.kd_ndcg_at_10.backend.")
        tr.artifact(EVAL)
        tr.artifact(METRICS)
    logging.info("\n%s", md)


if __name__ == "__main__":
    run_stage("evaluate", main)
