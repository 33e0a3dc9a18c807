"""Evaluation (stage `evaluate`): each system's run on dev and test, and what metrics.json holds for them.
Search and rerank are `kd.retrieval.search`'s; the verdicts and tables are `kd.retrieval.report`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd.atomic import atomic_dir
from kd.config import ModelConfig, Params
from kd.data.io import Dataset, passage_text
from kd.models.backends import load_student, query_encode_ms
from kd.models.loading import check_prompts
from kd.models.runtime import configure_threads, use_bf16
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher
from kd.models.teacher_cache import CachedTeacher
from kd.retrieval.index import LoadedIndex
from kd.retrieval.metrics import Qrels, Run, per_query, write_trec
from kd.retrieval.metrics import evaluate as evaluate_run
from kd.retrieval.report import split_summary
from kd.retrieval.search import (
    IdPairScorer,
    encode_queries,
    query_encoder,
    rerank,
    search,
    teacher_run,
    text_pair_scorer,
    to_run,
    view_pair_scorer,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from kd.models.teacher_corpus import TeacherCorpus


def student_runs(
    queries: dict[str, str], students: dict[str, SentenceTransformer], cfg: ModelConfig, index: LoadedIndex, depth: int
) -> dict[str, Run]:
    """The student's top-`depth` over the index per query backend (`eval.backends`): same index, each query encoder."""
    qids = list(queries)
    texts = [queries[q] for q in qids]
    out: dict[str, Run] = {}
    for backend, model in students.items():
        emb = encode_queries(model, [cfg.query_prefix + t for t in texts], batch_size=cfg.batch_size)
        out[backend] = to_run(qids, search(index.index, emb, index.docids, depth))
    return out


def teacher_systems(
    queries: dict[str, str],
    teacher: BiEncoderTeacher | CrossEncoderTeacher,
    view: TeacherCorpus | None,
    doc_text: dict[str, str],
    cache_root: Path,
    depth: int,
) -> tuple[IdPairScorer, Run | None]:
    """How the teacher scores (qid, docid) pairs on this split, and its own run where it can search.

    A bi-encoder with its passage matrix: dot products with the matrix, and exact search over it. Else
    (a cross-encoder) pair scores through the on-disk cache, and no run of its own.
    """
    if view is not None and isinstance(teacher, BiEncoderTeacher):
        qids = list(queries)
        t_emb = dict(zip(qids, teacher.encode_queries([queries[q] for q in qids])))
        return view_pair_scorer(t_emb, view), teacher_run(t_emb, view, depth)
    return text_pair_scorer(queries, doc_text, CachedTeacher(teacher, cache_root)), None


def split_systems(
    fixed: dict[str, Run], kd_runs: dict[str, Run], served: str, teacher: tuple[IdPairScorer, Run | None], rerank_depth: int
) -> dict[str, Run]:
    """Every system of one split, in table order: the `fixed` runs (BM25, untrained), `kd` (the served
    backend's run), the teacher alone (when it searched), and KD + the teacher's rerank of its top `rerank_depth`."""
    scorer, own = teacher
    out = {**fixed, "kd": kd_runs[served]}
    if own is not None:
        out["teacher"] = own
    out[f"kd+rerank@{rerank_depth}"] = rerank(out["kd"], rerank_depth, scorer)
    return out


def eval_students(student_dir: Path, cfg: ModelConfig, backends: list[str]) -> dict[str, SentenceTransformer]:
    """The trained student on each query backend to compare (`student.backend` first, then `eval.backends`).

    A static student is an embedding lookup with no ONNX export: torch is its only backend, and the
    others are skipped with a log line. Each load checks the saved prompts against `cfg`.
    """
    wanted = list(dict.fromkeys([cfg.backend, *backends]))
    if cfg.kind == "static":
        skipped = [b for b in wanted if b != "torch"]
        wanted = ["torch"]
        if skipped:
            log.info("eval.backends: %s skipped for a static student (torch only)", ", ".join(skipped))
    out = {b: load_student(student_dir, b, cfg.max_seq_length) for b in wanted}  # type: ignore[arg-type]
    for model in out.values():
        check_prompts(model, cfg, str(student_dir))
    return out


def served_latency(
    student_dir: Path, cfg: ModelConfig, teacher: BiEncoderTeacher | CrossEncoderTeacher, queries: list[str]
) -> dict[str, dict[str, float]]:
    """What one query costs each model to encode as the service runs it (the student on `student.backend`
    through `query_encoder`; a bi-encoder teacher on torch at its dtype). Call under the service's threads."""
    served = load_student(student_dir, cfg.backend, cfg.max_seq_length)  # type: ignore[arg-type]
    out = {f"student_{cfg.backend}": query_encode_ms(query_encoder(served, cfg.query_prefix), queries)}
    if isinstance(teacher, BiEncoderTeacher):
        dtype = "bfloat16" if use_bf16(teacher.cfg.dtype) else "float32"
        out[f"teacher_torch_{dtype}"] = query_encode_ms(teacher.encode_queries, queries)
    return out


def write_runs(out_dir: Path, runs: dict[str, dict[str, Run]]) -> None:
    """Every system's run as a TREC file, `out_dir/<split>/<system>.trec` (`@` -> `_at_`, `+` -> `_`), atomically."""
    with atomic_dir(out_dir) as tmp:
        for split, by_system in runs.items():
            for name, run in by_system.items():
                write_trec(run, tmp / split / f"{name.replace('@', '_at_').replace('+', '_')}.trec", name)


def evaluate_split(
    p: Params,
    queries: dict[str, str],
    qrels: Qrels,
    fixed: dict[str, Run],
    students: dict[str, SentenceTransformer],
    index: LoadedIndex,
    teacher: BiEncoderTeacher | CrossEncoderTeacher,
    view: TeacherCorpus | None,
    doc_text: dict[str, str],
    cache_root: Path,
) -> tuple[dict[str, Run], dict[str, Any]]:
    """One split: every system's run (`split_systems`) and what metrics.json holds for it (the table,
    `split_summary`'s verdict, and KD's nDCG@10 by query backend: dev chooses a backend, test reports it)."""
    by_backend = student_runs(queries, students, p.student, index, p.eval.depth)
    teacher_side = teacher_systems(queries, teacher, view, doc_text, cache_root, p.eval.depth)
    runs = split_systems(fixed, by_backend, p.student.backend, teacher_side, p.eval.rerank_depth)
    table = {name: evaluate_run(qrels, run) for name, run in runs.items()}
    summary = split_summary(table, {name: per_query(qrels, run)["nDCG@10"] for name, run in runs.items()})
    summary["kd_ndcg@10_by_query_backend"] = {b: evaluate_run(qrels, run)["nDCG@10"] for b, run in by_backend.items()}
    return runs, {"table": table, **summary}


SPLITS = ("dev", "test")


def evaluate(
    p: Params,
    ds: Dataset,
    index: LoadedIndex,
    teacher: BiEncoderTeacher | CrossEncoderTeacher,
    view: TeacherCorpus | None,
    student_dir: Path,
    fixed: dict[str, dict[str, Run]],
    cache_root: Path,
) -> tuple[dict[str, dict[str, Run]], dict[str, Any]]:
    """Every system on dev and test (`evaluate_split`), and what metrics.json holds.

    Args:
        p: the params (student, eval, service threads).
        ds: the dataset; its dev and test queries are searched over the whole corpus.
        index: the FAISS index the service serves (stage `index`).
        teacher, view: the teacher and its passage matrix (None for a cross-encoder).
        student_dir: the trained student.
        fixed: split -> the runs computed upstream (`bm25`, `untrained`), in table order.
        cache_root: where pair scores of a cross-encoder teacher are kept.

    Returns:
        split -> system -> run, and the metrics: the student, the serving mode, query counts, each
        split's table and verdict, and what one query costs each model to encode as the service runs
        it (`served_latency`, at `service.threads`).
    """
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    students = eval_students(student_dir, p.student, p.eval.backends)
    runs: dict[str, dict[str, Run]] = {}
    metrics: dict[str, Any] = {
        "student": p.student.name,
        "mode": "asymmetric" if p.index.passages == "teacher" else "symmetric",  # index.passages
        "queries": {s: len(ds.queries[s]) for s in SPLITS},
    }
    for split in SPLITS:
        runs[split], metrics[split] = evaluate_split(
            p, ds.queries[split], ds.qrels[split], fixed[split], students, index, teacher, view, doc_text, cache_root
        )  # fmt: skip
    configure_threads(p.service.threads)
    queries = [q for split in SPLITS for q in ds.queries[split].values()]
    metrics["query_encode_ms"] = latency = served_latency(student_dir, p.student, teacher, queries)
    log.info("query encode (service.threads=%s): %s", p.service.threads,
             ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in latency.items()))  # fmt: skip
    return runs, metrics
