"""Stages `baseline` and `index` under compute=local vs compute=ray (local Ray): wall time and output equality.

    python -m bench.compute_stages [--passages 200] [--actors 2] [--name compute_stages_smoke]

Runs the two stage functions for real in a temporary workspace: a slice of `data/` (the first
`--passages` passages by id, the queries judged on them; 200 = the smoke config's size, 0 = all),
the packaged MiniLM standing in as the trained student, and a separate `KD_CACHE_DIR` per mode so
nothing is resumed across modes. Ray's start-up is timed apart (`ray.init`), then each stage.
Writes bench/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_info, write_results
from kd.config import ComputeConfig, Params
from kd.data.io import SPLITS, Dataset, read_corpus, read_qrels, read_queries, write_dataset
from kd.models.store import minilm_path
from kd.params import load_params

ROOT = Path(__file__).resolve().parent.parent


def data_slice(src: Path, passages: int) -> Dataset:
    """The first `passages` passages by id and every query judged on them (`dev` falls back to `val`)."""
    corpus = read_corpus(src / "corpus.jsonl")
    keep = sorted(corpus)[:passages] if passages else sorted(corpus)
    corpus = {d: corpus[d] for d in keep}
    queries, qrels = {}, {}
    for split in SPLITS:
        name = split if (src / "queries" / f"{split}.jsonl").exists() else {"dev": "val"}.get(split, split)
        qs, qr = read_queries(src / "queries" / f"{name}.jsonl"), read_qrels(src / "qrels" / f"{name}.tsv")
        qr = {q: {d: r for d, r in docs.items() if d in corpus} for q, docs in qr.items()}
        qrels[split] = {q: docs for q, docs in qr.items() if docs}
        queries[split] = {q: qs[q] for q in qrels[split]}
    return Dataset(corpus, queries, qrels, {"source": f"slice of {src} ({len(corpus)} passages)"})


def shards(cache: Path) -> np.ndarray:
    """Every encoded shard under a cache, in a stable order, as one matrix (to compare modes)."""
    parts = sorted(cache.rglob("part-*.npy"), key=lambda p: (p.parent.parent.name, p.name))
    return np.concatenate([np.load(p) for p in parts])


def run_mode(work: Path, p: Params, label: str) -> dict[str, Any]:
    from stages import baseline, index

    os.environ["KD_CACHE_DIR"] = str(work / f"cache-{label}")
    out: dict[str, Any] = {"mode": label}
    for name, stage in (("baseline", baseline), ("index", index)):
        t = time.perf_counter()
        stage.main(p)
        out[f"{name}_s"] = time.perf_counter() - t
        src = work / "artifacts" / name
        shutil.copytree(src, work / f"{name}-{label}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=200)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--name", default="")
    args = ap.parse_args()
    name = args.name or f"compute_stages_{args.passages or 'all'}"

    ds = data_slice(ROOT / "data", args.passages)
    base = load_params(ROOT / "params.yaml")
    work = Path(tempfile.mkdtemp(prefix="kd-compute-stages-"))
    cwd = Path.cwd()
    try:
        write_dataset(ds, work / "data")
        shutil.copytree(minilm_path(), work / "artifacts" / "student")
        os.chdir(work)
        rows = [run_mode(work, dataclasses.replace(base, compute=ComputeConfig(backend="local")), "local")]
        ray_cfg = ComputeConfig(backend="ray", actors=args.actors, cpus_per_actor=1, num_cpus=2)
        from kd.compute import init_ray

        t = time.perf_counter()
        init_ray(ray_cfg)
        ray_init_s = time.perf_counter() - t
        rows.append(run_mode(work, dataclasses.replace(base, compute=ray_cfg), f"ray{args.actors}"))
        rows[-1]["ray_init_s"] = ray_init_s
        diff = float(np.abs(shards(work / "cache-local") - shards(work / f"cache-ray{args.actors}")).max())
        same_runs = all(
            (work / "baseline-local" / "runs" / f"{s}.trec").read_text()
            == (work / f"baseline-ray{args.actors}" / "runs" / f"{s}.trec").read_text()
            for s in SPLITS
        )
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    data = {"machine": machine_info(), "passages": len(ds.corpus), "rows": rows,
            "max_abs_embedding_diff": diff, "baseline_runs_identical": same_runs}  # fmt: skip
    lines = [
        f"# compute=local vs compute=ray: stages baseline + index on {len(ds.corpus)} passages\n",
        "Local Ray with 2 CPUs, actors of 1 CPU; Ray start-up timed apart. Loaded, shared 2-core machine.\n",
        "| mode | ray.init s | baseline s | index s |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r.get('ray_init_s', 0):.1f} | {r['baseline_s']:.1f} | {r['index_s']:.1f} |" for r in rows),
        f"\nmax |embedding difference| local vs ray: {diff:.2e}; baseline TREC runs identical: {same_runs}",
    ]
    js, md = write_results(name, data, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
