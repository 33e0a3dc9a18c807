"""Evaluation (stage `evaluate`): each system's run on a split, and the results table: how much of the
teacher the student recovers, with paired tests and intervals. Search and rerank are `kd.retrieval.search`'s.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from kd.atomic import atomic_dir, atomic_path, write_text
from kd.config import ModelConfig, Params
from kd.models.backends import load_student, query_encode_ms
from kd.models.loading import check_prompts
from kd.models.runtime import use_bf16
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher
from kd.models.teacher_cache import CachedTeacher
from kd.retrieval.index import LoadedIndex
from kd.retrieval.metrics import MEASURES, Qrels, Run, paired_test, per_query, write_trec
from kd.retrieval.metrics import evaluate as evaluate_run
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


def gap_summary(table: dict[str, dict[str, float]], measure: str = "nDCG@10") -> dict[str, float]:
    """How much of the teacher the KD student recovers: ratio to the teacher, share of the gap closed."""
    kd, teacher, base = table["kd"][measure], table["teacher"][measure], table["untrained"][measure]
    gap = teacher - base
    return {
        "student_over_teacher": kd / teacher if teacher else float("nan"),
        "gap_closed": (kd - base) / gap if gap else float("nan"),
    }


def gap_intervals(
    pq: dict[str, dict[str, float]], n_resamples: int = 2000, seed: int = 0
) -> dict[str, list[float]]:
    """95% bootstrap intervals of `gap_summary`'s ratios, the questions resampled (paired across systems).

    Why: with 50-120 questions a ratio's point value hides how much it owes to which questions were
    asked; the interval says whether a miss (or a win) is beyond that sampling noise. `pq` maps system
    -> qid -> a per-query measure (nDCG@10 in `evaluate`) for `kd`, `teacher` and `untrained`. Seeds
    are a separate source of spread (bench.seeds).
    """
    qids = sorted(pq["kd"])
    kd, teacher, base = (np.array([pq[s].get(q, 0.0) for q in qids]) for s in ("kd", "teacher", "untrained"))

    def ratio(k: np.ndarray, t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        """Student over teacher: mean(k) / mean(t) along `axis` (`b`, the untrained student, unused)."""
        return np.asarray(k.mean(axis) / t.mean(axis))

    def closed(k: np.ndarray, t: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        """Gap closed: (mean(k) - mean(b)) / (mean(t) - mean(b)) along `axis`."""
        return np.asarray((k.mean(axis) - b.mean(axis)) / (t.mean(axis) - b.mean(axis)))

    out: dict[str, list[float]] = {}
    for name, statistic in (("student_over_teacher", ratio), ("gap_closed", closed)):
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # the interval is read below, not by scipy
            res = stats.bootstrap(
                (kd, teacher, base), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                method="percentile", rng=np.random.default_rng(seed),
            )
        # the percentile interval, read off the draws: resamples where the teacher ties the untrained
        # student (gap closed undefined) are left out, and a constant statistic gives [v, v] (scipy: nan)
        draws = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
        low, high = np.percentile(draws, [2.5, 97.5]) if draws.size else (float("nan"), float("nan"))
        out[f"{name}_ci95"] = [float(low), float(high)]
    return out


def markdown_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A Markdown table with one row per system and its `columns` values to 4 decimals.

    Example:
        >>> print(markdown_table({"kd": {"nDCG@10": 0.5}}, ["nDCG@10"]), end="")
        | system | nDCG@10 |
        |---|---|
        | kd | 0.5000 |
    """
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for system, values in rows.items():
        lines.append(f"| {system} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


NOT_COMPUTED = "not computed: a cross-encoder teacher has no passage embeddings to search the corpus with"


def split_summary(table: dict[str, dict[str, float]], per_query_ndcg: dict[str, dict[str, float]]) -> dict[str, object]:
    """One split's verdict: KD vs untrained (paired tests), and how much of the teacher KD recovers.

    Args:
        table: system -> measure -> value (needs `kd`, `untrained`; `teacher` when it was computed).
        per_query_ndcg: system -> qid -> nDCG@10, for the paired test and the bootstrap intervals.
    """
    out: dict[str, object] = {"kd_vs_untrained_ndcg@10": paired_test(per_query_ndcg["kd"], per_query_ndcg["untrained"])}
    if "teacher" in table:
        out.update({**gap_summary(table), **gap_intervals(per_query_ndcg)})
    else:
        out["teacher_alone"] = NOT_COMPUTED
    return out


def report_markdown(metrics: dict[str, Any], corpus_size: int, corpus_encoder: str, columns: list[str]) -> str:
    """`artifacts/eval/table.md`: per split, the table, the paired test, the teacher ratio, the backends.

    Args:
        metrics: what `metrics.json` holds: per split, `table`, `split_summary`'s keys and
            `kd_ndcg@10_by_query_backend`; `queries` (split -> count).
        corpus_size: passages searched.
        corpus_encoder: how the index's passages were encoded (`kd.models.runtime.corpus_encoder`).
        columns: the measures shown.
    """
    md = ""
    for split, n in metrics["queries"].items():
        m = metrics[split]
        sig = m["kd_vs_untrained_ndcg@10"]
        md += f"### {split} ({n} queries, full corpus of {corpus_size} passages)\n\n"
        md += markdown_table(m["table"], columns)
        md += f"\nKD vs untrained nDCG@10: diff {sig['mean_diff']:+.4f}, paired t p={sig['t_pvalue']:.3g}, "
        md += f"Wilcoxon p={sig['wilcoxon_pvalue']:.3g} (n={int(sig['n'])})"
        if "gap_closed" in m:
            ratio, closed = m["student_over_teacher_ci95"], m["gap_closed_ci95"]
            md += f"; KD / teacher {m['student_over_teacher']:.1%} (95% CI over questions {ratio[0]:.1%} to {ratio[1]:.1%}), "
            md += f"gap closed {m['gap_closed']:.1%} ({closed[0]:.1%} to {closed[1]:.1%})\n\n"
        else:
            md += f"; teacher alone {NOT_COMPUTED}\n\n"
        md += f"KD nDCG@10 by query-encoder backend (corpus encoded with {corpus_encoder}): "
        md += ", ".join(f"{b} {v:.4f}" for b, v in m["kd_ndcg@10_by_query_backend"].items()) + "\n\n"
    return md


def table_rows(metrics: dict[str, Any], columns: list[str]) -> list[list[object]]:
    """`artifacts/eval/table.csv`'s rows after its header (split, system, *columns), values to 4 decimals."""
    return [
        [split, name, *(round(values[c], 4) for c in columns)]
        for split in metrics["queries"]
        for name, values in metrics[split]["table"].items()
    ]


def tracked_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """`metrics.json` flattened to the MLflow names `mlflow ui` compares (`test.kd.nDCG@10`, ...)."""
    out: dict[str, float] = {}
    for split in metrics["queries"]:
        m = metrics[split]
        for name, values in m["table"].items():
            out.update({f"{split}.{name}.{k}": v for k, v in values.items()})
        out.update({f"{split}.{k}": float(m[k]) for k in ("gap_closed", "student_over_teacher") if k in m})
        for key in ("gap_closed_ci95", "student_over_teacher_ci95"):
            if key in m:
                out.update({f"{split}.{key}_low": m[key][0], f"{split}.{key}_high": m[key][1]})
        out[f"{split}.kd_vs_untrained_t_pvalue"] = m["kd_vs_untrained_ndcg@10"]["t_pvalue"]
        out.update({f"{split}.kd_ndcg_at_10.backend.{b}": v for b, v in m["kd_ndcg@10_by_query_backend"].items()})
    return out


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


def write_tables(out_dir: Path, metrics: dict[str, Any], corpus_size: int, corpus_encoder: str) -> str:
    """`out_dir/table.csv` and `out_dir/table.md` (every measure of `MEASURES`), atomically; returns the Markdown."""
    columns = list(MEASURES)
    with atomic_path(out_dir / "table.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "system", *columns])
        writer.writerows(table_rows(metrics, columns))
    md = report_markdown(metrics, corpus_size, corpus_encoder, columns)
    write_text(out_dir / "table.md", md)
    return md
