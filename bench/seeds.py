"""A config over training seeds, the full pipeline: dev and test, each seed one `dvc exp run`.

    python -m bench.seeds --config default --seeds 13 1 2
    python -m bench.seeds --config full --seeds 13 1 2 --set +experiment=full
    python -m bench.seeds --pool default:dev django-default-v2:dev django-default-v2:test
    python -m bench.seeds --config sqlalchemy-default --set data=sqlalchemy_docs_faq   # a corpus never chosen on

`--pool` reads the CSV only: KD (and untrained, teacher) nDCG@10 per seed, averaged over several
splits of several configs weighted by their question counts, i.e. each question counted once. That
is how dev evidence from two corpora is pooled (CPython dev + both splits of Django, 99 questions).

This is how headline claims are made: the mean and range over seeds, with the paired test KD vs
untrained per seed. Only `train.seed` differs between the seeds of a config. Rows are appended to
`bench/results/seeds.csv`; `bench/results/seeds.md` is rewritten from the whole CSV (one table per
config, mean rows in bold). Dev chose the configs (bench.ablation); test is only reported here.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from statistics import mean
from typing import Any

from bench.common import append_rows, cpu_label, dvc_exp_run

CSV = Path("bench/results/seeds.csv")
MD = Path("bench/results/seeds.md")
SYSTEMS = ("bm25", "untrained", "kd", "teacher", "kd+rerank@10")
BACKENDS = ("onnx", "torch", "onnx-int8")
FIELDS = ["config", "train_seed", "split", "queries", *(f"{s} nDCG@10" for s in SYSTEMS), "kd/teacher", "gap_closed",
          "kd_vs_untrained_t_p", *(f"kd nDCG@10 ({b})" for b in BACKENDS), "cpu", "overrides"]  # fmt: skip


def rows_from_metrics(metrics: dict[str, Any], config: str, seed: int, cpu: str, overrides: str) -> list[dict[str, Any]]:
    """One row per split of an evaluate `metrics.json`."""
    out = []
    for split in ("dev", "test"):
        m = metrics[split]
        row: dict[str, Any] = {"config": config, "train_seed": seed, "split": split, "cpu": cpu, "overrides": overrides}
        row["queries"] = metrics.get("queries", {}).get(split, "")
        for s in SYSTEMS:
            row[f"{s} nDCG@10"] = round(m["table"][s]["nDCG@10"], 4) if s in m["table"] else ""
        row["kd/teacher"] = round(m.get("student_over_teacher", float("nan")), 4)
        row["gap_closed"] = round(m.get("gap_closed", float("nan")), 4)
        row["kd_vs_untrained_t_p"] = round(m["kd_vs_untrained_ndcg@10"]["t_pvalue"], 4)
        for b in BACKENDS:
            row[f"kd nDCG@10 ({b})"] = round(m.get("kd_ndcg@10_by_query_backend", {}).get(b, float("nan")), 4)
        out.append(row)
    return out


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def markdown(rows: list[dict[str, str]]) -> str:
    """One table per config: each seed, then the mean (and range of KD) per split."""
    lines = ["# Configs over training seeds (dev and test)", "",
             "Written by `python -m bench.seeds` from `bench/results/seeds.csv`: each row one `dvc exp run` of the",
             "shipped pipeline; only `train.seed` differs within a config. Dev chose the configs; test is reported.",
             "`cpu`: bf16 = a 2-core AMD EPYC with avx512_bf16 (teacher and corpus encodes under bf16 autocast);",
             "no-bf16 = a 2-core AMD EPYC with AVX2 only (float32).",
             "Configs named `django-*` run on `data=django_docs_faq`, a second corpus used for choosing: both",
             "of its splits are dev evidence there, not test. Configs named `sqlalchemy-*` run on",
             "`data=sqlalchemy_docs_faq`, a corpus no choice was made on: both splits are held-out evidence.", ""]  # fmt: skip
    cols = [f"{s} nDCG@10" for s in SYSTEMS] + ["kd/teacher", "gap_closed", "kd_vs_untrained_t_p", "kd nDCG@10 (onnx-int8)"]
    names = ["bm25", "untrained", "KD", "teacher", "KD+rerank@10", "KD/teacher", "gap closed", "t p", "KD int8"]
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        lines += [f"## {config}: `{mine[0].get('overrides') or '(defaults)'}` + `train.seed=N`", "",
                  "| split | seed | cpu | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]  # fmt: skip
        for split in ("dev", "test"):
            part = [r for r in mine if r["split"] == split]
            for r in part:
                lines.append(f"| {split} | {r['train_seed']} | {r.get('cpu', '')} | " + " | ".join(r[c] for c in cols) + " |")
            means = []
            for c in cols:
                vals = [v for v in (_num(r[c]) for r in part) if v is not None and v == v]
                means.append(f"{mean(vals):.4f}" if vals and c != "kd_vs_untrained_t_p" else "")
            kd = [v for v in (_num(r["kd nDCG@10"]) for r in part) if v is not None]
            if kd:
                means[2] = f"**{mean(kd):.4f}** ({min(kd):.4f}–{max(kd):.4f})"
            lines.append(f"| {split} | **mean of {len(part)}** | | " + " | ".join(means) + " |")
        lines.append("")
    return "\n".join(lines)


POOLED = ("untrained nDCG@10", "kd nDCG@10", "teacher nDCG@10")


def pooled(rows: list[dict[str, str]], parts: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per training seed found in every part: each POOLED column averaged over the parts' questions."""
    by_part = {part: {r["train_seed"]: r for r in rows if (r["config"], r["split"]) == part} for part in parts}
    for (config, split), found in by_part.items():
        if not found:
            raise SystemExit(f"--pool {config}:{split}: no such rows in {CSV}")
        if any(not r.get("queries") for r in found.values()):
            raise SystemExit(f"--pool {config}:{split}: rows without a question count (column `queries`)")
    seeds = [s for s in by_part[parts[0]] if all(s in found for found in by_part.values())]
    out = []
    for seed in seeds:
        picked = [found[seed] for found in by_part.values()]
        n = sum(int(r["queries"]) for r in picked)
        row: dict[str, Any] = {"train_seed": seed, "queries": n}
        for col in POOLED:
            row[col] = round(sum(int(r["queries"]) * float(r[col]) for r in picked) / n, 4)
        out.append(row)
    return out


def pooled_markdown(parts: list[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    lines = [f"Pooled: {' + '.join(f'{c}:{s}' for c, s in parts)}", "",
             "| seed | questions | untrained | KD | teacher |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['train_seed']} | {r['queries']} | " + " | ".join(f"{r[c]:.4f}" for c in POOLED) + " |")
    if rows:
        means = " | ".join(f"{mean(r[c] for r in rows):.4f}" for c in POOLED)
        lines.append(f"| **mean of {len(rows)}** | {rows[0]['queries']} | {means} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="the name the rows are filed under")
    ap.add_argument("--pool", nargs="+", metavar="CONFIG:SPLIT", help="print pooled nDCG@10 per seed from the CSV; run nothing")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides (each a `-S` of dvc exp run)")
    args = ap.parse_args()
    if args.pool:
        parts: list[tuple[str, str]] = []
        for item in args.pool:
            config, _, split = item.rpartition(":")
            if not config or split not in ("dev", "test"):
                ap.error("--pool takes CONFIG:SPLIT items, SPLIT dev or test (e.g. default:dev)")
            parts.append((config, split))
        with CSV.open(newline="") as fh:
            print(pooled_markdown(parts, pooled(list(csv.DictReader(fh)), parts)))
        return
    if not args.config:
        ap.error("--config is required (or --pool to read the CSV)")
    cpu = cpu_label()
    for seed in args.seeds:
        dvc_exp_run(f"seeds-{args.config}-s{seed}", [*args.set, f"train.seed={seed}"])
        new = rows_from_metrics(json.loads(Path("metrics.json").read_text()), args.config, seed, cpu, " ".join(args.set))
        append_rows(CSV, FIELDS, new)
        print(new, flush=True)
        with CSV.open(newline="") as fh:
            MD.write_text(markdown(list(csv.DictReader(fh))))


if __name__ == "__main__":
    main()
