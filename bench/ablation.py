"""Ablation sweep on DEV: each variant x each training seed through `dvc exp run`, one CSV row per run.

    python -m bench.ablation                      # the variants below, seeds 1 2 3
    python -m bench.ablation --seeds 1 --only base sim_kl

Each run is a real DVC experiment of the shipped pipeline (`dvc exp show` lists them; MLflow logs
them). Only dev numbers are written to bench/results/ablation.csv: the sweep is for choosing, and
test is never looked at to choose. `dvc plots show` draws the CSV (dvc.yaml, "ablation on dev").
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("bench/results/ablation.csv")
FIELDS = ["variant", "seed", "dev_ndcg@10", "dev_mrr@10", "dev_gap_closed", "dev_student_over_teacher", "wall_s", "overrides"]

# name -> overrides on top of the committed params.yaml (each a `-S` of `dvc exp run`)
VARIANTS: dict[str, list[str]] = {
    "base": ["mining.sources=[bm25]", "mining.pseudo_queries=0", "loss.sim_kl=0.0"],
    "teacher_negs": ["mining.sources=[bm25,teacher]", "mining.pseudo_queries=0", "loss.sim_kl=0.0"],
    "sim_kl": ["mining.sources=[bm25]", "mining.pseudo_queries=0", "loss.sim_kl=1.0"],
    "pseudo": ["mining.sources=[bm25]", "mining.pseudo_queries=300", "loss.sim_kl=0.0"],
    "all": ["mining.sources=[bm25,teacher]", "mining.pseudo_queries=300", "loss.sim_kl=1.0"],
}


def run_variant(name: str, overrides: list[str], seed: int) -> dict[str, object]:
    cmd = ["dvc", "exp", "run", "--name", f"abl-{name}-s{seed}", "-S", f"train.seed={seed}"]
    for o in overrides:
        cmd += ["-S", o]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    dev = json.loads(Path("metrics.json").read_text())["dev"]
    return {
        "variant": name, "seed": seed,
        "dev_ndcg@10": round(dev["table"]["kd"]["nDCG@10"], 4), "dev_mrr@10": round(dev["table"]["kd"]["MRR@10"], 4),
        "dev_gap_closed": round(dev.get("gap_closed", float("nan")), 4),
        "dev_student_over_teacher": round(dev.get("student_over_teacher", float("nan")), 4),
        "wall_s": round(time.perf_counter() - started, 1), "overrides": " ".join(overrides),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = ap.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    new = not OUT.exists()
    with OUT.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for name in args.only:
            for seed in args.seeds:
                row = run_variant(name, VARIANTS[name], seed)
                writer.writerow(row)
                fh.flush()
                print(row, flush=True)


if __name__ == "__main__":
    main()
