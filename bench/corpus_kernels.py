"""Corpus-pass rate and fidelity of each `corpus_backend`, for the teacher and the student, on this CPU.

    python -m bench.corpus_kernels                       # 128 passages of data/, torch vs onnx vs onnx-int8
    python -m bench.corpus_kernels --passages 64 --threads 1

On a CPU with native bf16 a `torch-bf16` row is added (torch under bfloat16 autocast, what `dtype: auto`
runs there), so whether bf16 pays on this CPU is measured, not assumed.

Each pass runs through `kd.compute.ShardRunner`, the code stages `teacher_corpus`, `baseline` and
`index` run, with `corpus_backend` set per row (what `auto` picks here is printed). Rates are passages
per second over the same seeded sample, backends interleaved over `--rounds` so a slow spell of a
shared machine hits all of them; fidelity is the cosine of each passage's embedding to the torch
float32 one (mean and minimum). Output: bench/results/corpus_kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import cpu_label, write_results
from kd.choices import BACKENDS

RESULTS = Path("bench/results")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.corpus_kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=128, help="passages sampled from data/corpus.jsonl")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds per backend")
    ap.add_argument("--threads", type=int, default=None, help="threads per pass (default: every core this process has)")
    ap.add_argument("--data", type=Path, default=Path("data"), help="the pipeline's data/ folder (stage `data`)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from kd.compose import compose
    from kd.compute import ModelSpec, ShardRunner, kernel_path
    from kd.data.io import passage_text, read_dataset
    from kd.models.runtime import available_cores, bf16_speedup, configure_threads, corpus_backend_for, native_bf16
    from kd.params import params_from_dict

    p = params_from_dict(compose())
    ds = read_dataset(args.data)
    docids = sorted(ds.corpus)
    pick = np.random.default_rng(13).choice(len(docids), min(args.passages, len(docids)), replace=False)
    texts = [passage_text(ds.corpus[docids[i]]) for i in sorted(pick)]
    threads = args.threads or available_cores()
    configure_threads(threads)
    rows: list[dict[str, Any]] = []
    variants = {b: (b, "float32") for b in BACKENDS}
    if native_bf16():  # whether bf16 pays here is measured, not read off the flag
        variants["torch-bf16"] = ("torch", "bfloat16")
    for role, cfg in (("teacher", p.teacher), ("student", p.student)):
        specs = {}
        for name, (backend, dtype) in variants.items():
            c = dataclasses.replace(cfg, corpus_backend=backend, dtype=dtype)
            specs[name] = ModelSpec.teacher(c) if role == "teacher" else ModelSpec.student(c)
        runners = {b: ShardRunner(s, "encode") for b, s in specs.items()}  # exports ONNX on first use
        for r in runners.values():
            r.run(texts[:4])  # warm-up
        seconds: dict[str, list[float]] = {b: [] for b in variants}
        emb: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for b, r in runners.items():
                t0 = time.perf_counter()
                emb[b] = r.run(texts)
                seconds[b].append(time.perf_counter() - t0)
        for b in variants:
            cos = np.sum(emb[b] * emb["torch"], axis=1)
            best = min(seconds[b])
            rows.append({"role": role, "model": cfg.model, "backend": b, "kernel": kernel_path(specs[b]),
                         "passages_per_s": round(len(texts) / best, 2),
                         "speedup_vs_torch": round(min(seconds["torch"]) / best, 2),
                         "cos_mean": round(float(cos.mean()), 5), "cos_min": round(float(cos.min()), 5)})  # fmt: skip
            print(rows[-1], flush=True)
    auto = {role: corpus_backend_for("auto", static=(role == "student" and p.student.kind == "static"))
            for role in ("teacher", "student")}  # fmt: skip
    meta = {"cpu": cpu_label(), "bf16_speedup": bf16_speedup(), "threads": threads, "passages": len(texts), "rounds": args.rounds, "auto_here": auto,
            "max_seq_length": {"teacher": p.teacher.max_seq_length, "student": p.student.max_seq_length}}  # fmt: skip
    md = [f"# Corpus passes per backend ({meta['cpu']}, {threads} threads, {len(texts)} passages, best of {args.rounds})",
          "", f"`corpus_backend: auto` here: teacher {auto['teacher']}, student {auto['student']} "
          f"(bf16 autocast measured {meta['bf16_speedup']}x float32 by `kd.models.runtime.bf16_speedup`; 0 = no native bf16).", "",
          "| role | model | backend | kernel | passages/s | vs torch | cos to torch mean | min |",
          "|---|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    md += [f"| {r['role']} | {r['model']} | {r['backend']} | {r['kernel']} | {r['passages_per_s']} | "
           f"{r['speedup_vs_torch']}x | {r['cos_mean']} | {r['cos_min']} |" for r in rows]  # fmt: skip
    write_results("corpus_kernels", {**meta, "rows": rows}, "\n".join(md) + "\n", out_dir=args.out)


if __name__ == "__main__":
    main()
