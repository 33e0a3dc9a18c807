"""A config over training seeds, the full pipeline: dev and test, each seed one `dvc exp run`.

    python -m bench.seeds --config default --seeds 13 1 2
    python -m bench.seeds --config full --seeds 13 1 2 --set +experiment=full

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
FIELDS = ["config", "train_seed", "split", *(f"{s} nDCG@10" for s in SYSTEMS), "kd/teacher", "gap_closed",
          "kd_vs_untrained_t_p", *(f"kd nDCG@10 ({b})" for b in BACKENDS), "cpu", "overrides"]  # fmt: skip


def rows_from_metrics(metrics: dict[str, Any], config: str, seed: int, cpu: str, overrides: str) -> list[dict[str, Any]]:
    """One row per split of an evaluate `metrics.json`."""
    out = []
    for split in ("dev", "test"):
        m = metrics[split]
        row: dict[str, Any] = {"config": config, "train_seed": seed, "split": split, "cpu": cpu, "overrides": overrides}
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
             "`cpu`: bf16 = a 2-core box with avx512_bf16 (teacher and corpus encodes under bf16 autocast);",
             "no-bf16 = a 2-core AVX2 box (float32).",
             "Configs named `django-*` run on `data=django_docs_faq`, a second corpus used for choosing: both",
             "of its splits are dev evidence there, not test.", ""]  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the name the rows are filed under")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides (each a `-S` of dvc exp run)")
    args = ap.parse_args()
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
