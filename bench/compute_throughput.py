"""Teacher-pass throughput through `kd.compute`: local vs Ray with 1 and 2 actors (local Ray).

    python -m bench.compute_throughput [--passages 200] [--shard 25] [--model teacher|student]

Encodes the first `--passages` corpus passages (by id) with the params' teacher (`kd.models.teacher.load_teacher`,
all-mpnet-base-v2 by default) or the packaged student, once per mode. Reports, per mode, the wall time
of the whole pass (Ray: actor start and model load included; `ray.init` timed apart) and the
steady-state rate: passages / the actors' summed busy seconds per shard, times the actors. Each mode
runs from an empty chunk folder. Writes bench/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_info, write_results
from kd import compute
from kd.config import ComputeConfig
from kd.data.io import passage_text, read_corpus
from kd.models.runtime import use_bf16
from kd.params import load_params

ROOT = Path(__file__).resolve().parent.parent


class TimedRunner(compute.ShardRunner):
    """The real runner, plus one column: the seconds this shard took (stripped before use)."""

    def run(self, payload: list[Any]) -> np.ndarray:
        t = time.perf_counter()
        out = super().run(payload)
        return np.hstack([out, np.full((len(out), 1), time.perf_counter() - t, dtype=np.float32)])


def one(texts: list[str], spec: compute.ModelSpec, cfg: ComputeConfig, actors: int) -> dict[str, Any]:
    t = time.perf_counter()
    out = compute.run_sharded(texts, [len(x) for x in texts], spec, "encode", cfg, None, np.float32, TimedRunner)
    wall = time.perf_counter() - t
    shard_s = np.unique(out[:, -1])  # one value per shard (ties between shards are vanishingly unlikely)
    busy = float(shard_s.sum())
    return {
        "wall_s": wall,
        "passages_per_s_wall": len(texts) / wall,
        "busy_s": busy,
        "passages_per_s_steady": len(texts) / (busy / actors),
        "per_actor_passages_per_s": len(texts) / busy,
        "emb": out[:, :-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=200)
    ap.add_argument("--shard", type=int, default=25)
    ap.add_argument("--model", choices=("teacher", "student"), default="teacher")
    ap.add_argument("--modes", default="local,ray1,ray2")
    ap.add_argument("--name", default="")
    args = ap.parse_args()

    p = load_params(ROOT / "params.yaml")
    corpus = read_corpus(ROOT / "data" / "corpus.jsonl")
    texts = [passage_text(corpus[d]) for d in sorted(corpus)[: args.passages]]
    spec = compute.ModelSpec.teacher(p.teacher) if args.model == "teacher" else compute.ModelSpec.student(p.student)
    rows: list[dict[str, Any]] = []
    ref: np.ndarray | None = None
    for mode in args.modes.split(","):
        if mode == "local":
            cfg, actors = ComputeConfig(backend="local", batch_size=args.shard), 1
        else:
            actors = int(mode.removeprefix("ray"))
            cfg = ComputeConfig(backend="ray", actors=actors, cpus_per_actor=1, num_cpus=2, batch_size=args.shard)
            t = time.perf_counter()
            compute.init_ray(cfg)
            init_s = time.perf_counter() - t
        r = one(texts, spec, cfg, actors)
        emb = r.pop("emb")
        ref = emb if ref is None else ref
        row = {"mode": mode, "actors": actors, "threads_per_worker": 2 if mode == "local" else 1, **r,
               "max_abs_diff_vs_first": float(np.abs(emb - ref).max())}  # fmt: skip
        if mode != "local":
            row["ray_init_s"] = init_s
        rows.append(row)
        print(row, flush=True)
    model = p.teacher.model if args.model == "teacher" else p.student.model
    bf16 = use_bf16(p.teacher.dtype if args.model == "teacher" else p.student.dtype)
    precision = "bf16 autocast (native here and measured faster)" if bf16 else "float32 (no native bf16, bf16 measured slower here, or dtype float32)"
    name = args.name or f"compute_throughput_{args.model}"
    data = {"machine": machine_info(), "model": model, "passages": len(texts), "shard": args.shard, "rows": rows,
            "note": "local = 1 process, torch's 2 threads; rayN = N actors of 1 CPU (1 torch thread) on a local Ray"}  # fmt: skip
    lines = [
        f"# {args.model} pass ({model}) through kd.compute: {len(texts)} passages, shards of {args.shard}\n",
        "wall = whole pass (Ray: actor start + model load inside); steady = passages / (summed shard seconds / actors).",
        f"{precision}. Compare within this table (`machine` in the JSON: CPU, load average).\n",
        "| mode | wall s | passages/s (wall) | passages/s (steady) | per worker passages/s | ray.init s | max diff |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['mode']} | {r['wall_s']:.1f} | {r['passages_per_s_wall']:.2f} | {r['passages_per_s_steady']:.2f} "
            f"| {r['per_actor_passages_per_s']:.2f} | {r.get('ray_init_s', 0):.1f} | {r['max_abs_diff_vs_first']:.1e} |"
            for r in rows
        ),
    ]
    js, md = write_results(name, data, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
