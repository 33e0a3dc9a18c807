"""The results of stage `evaluate` as a reader sees them: how much of the teacher the student recovers
(ratio, gap closed, bootstrap intervals over questions), the paired test, the Markdown and CSV tables
and the flat names MLflow compares. Pure functions of `metrics.json`'s contents.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from kd.atomic import atomic_path, write_text
from kd.retrieval.metrics import MEASURES, paired_test


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
