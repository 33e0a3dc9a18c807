"""Where does the time of one `/search` go? Profile the request path without HTTP.

    python -m bench.profile_request                      # student.backend from params (else torch)
    python -m bench.profile_request --backend onnx-int8 --threads 1 --n 500

The path is what the service does per query: encode (SentenceTransformer.encode, batch = the
request's queries), FAISS search, result assembly (row -> id/score/title/text). Two views:
  1. a stage breakdown (p50/p99 per stage, timed by hand over --n requests): tokenize, transformer
     forward, pooling + normalise, the rest of `encode` (its own overhead), FAISS search, assembly;
  2. a profiler over --n requests: pyinstrument when installed (--tool pyinstrument), else cProfile,
     top functions by cumulative and by own time.
Reads artifacts like bench/latency.py (same fallbacks, noted in the output). Writes
bench/results/profile_request.txt.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/profile_request.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import RESULTS, Stats, fmt, load_index, load_workspace, log, setup_logging  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_request", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--backend", default=None, help="torch | onnx | onnx-int8 (default: student.backend, else torch)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--n", type=int, default=300, help="requests per view")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tool", choices=("auto", "cprofile", "pyinstrument"), default="auto")
    ap.add_argument("--top", type=int, default=25, help="rows of the profiler table")
    ap.add_argument("--max-passages", type=int, default=2000, help="size of a temporary index (no artifacts/index)")
    ap.add_argument("--out", type=Path, default=RESULTS / "profile_request.txt")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    import torch

    from kd.backends import load_student
    from kd.runtime import configure_threads

    threads = configure_threads(args.threads)
    ws = load_workspace(args.root.resolve(), args.max_passages)
    p = ws.params
    backend = args.backend or str(getattr(p.student, "backend", "torch"))
    model = load_student(ws.student_dir, backend, p.student.max_seq_length)
    prefix = p.student.query_prefix

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        emb = model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    view = load_index(
        ws, lambda t: encode([p.student.passage_prefix + x for x in t], p.student.batch_size), args.max_passages
    )
    index, docids, passages = view.index, view.docids, view.passages
    queries = ws.test_queries()
    nq = len(queries)

    from kd.backends import OnnxQueryEncoder

    fast = OnnxQueryEncoder.from_model(model)  # what the service uses on the ONNX backends

    def encode_query(texts: list[str]) -> np.ndarray:
        return fast(texts) if fast is not None else encode(texts, 1)

    def request(query: str) -> list[dict[str, Any]]:
        """The service's /search for one query (encode + search + assembly)."""
        emb = encode_query([prefix + query])
        scores, rows = index.search(emb, args.k)
        return [
            {"id": docids[r], "score": float(s), "title": passages[r].get("title", ""), "text": passages[r]["text"]}
            for r, s in zip(rows[0], scores[0])
            if r >= 0
        ]

    for i in range(20):  # warm-up
        request(queries[i % nq])

    # ---------------------------------------------------------------- 1. stage breakdown
    preprocess: Callable[[list[str]], dict[str, Any]] = getattr(model, "preprocess", None) or model.tokenize
    modules = list(model)
    stages: dict[str, list[float]] = {
        k: []
        for k in (
            "tokenize",
            "transformer forward",
            "pooling + normalise",
            "encode() total",
            "fast: tokenize",
            "fast: ORT session.run",
            "fast: pooling + normalise",
            "service encode total",
            "FAISS search",
            "assembly",
        )
    }
    for i in range(args.n):
        q = prefix + queries[i % nq]
        t0 = time.perf_counter()
        features = preprocess([q])
        t1 = time.perf_counter()
        with torch.inference_mode():
            features = modules[0](features)
            t2 = time.perf_counter()
            for module in modules[1:]:
                features = module(features)
            emb = torch.nn.functional.normalize(features["sentence_embedding"], dim=-1).numpy()
        t3 = time.perf_counter()
        emb = encode([q], 1)
        t4 = time.perf_counter()
        f1 = f2 = f3 = t4
        if fast is not None:  # the fast path's own parts, as in OnnxQueryEncoder.__call__
            feats = fast.tokenizer([q.strip()], padding=True, truncation="longest_first",
                                   max_length=fast.max_length, return_tensors="np")  # fmt: skip
            inputs = {n: feats[n].astype(np.int64, copy=False) for n in fast.input_names}
            f1 = time.perf_counter()
            (tokens,) = fast.session.run([fast.output_name], inputs)
            f2 = time.perf_counter()
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            pooled = (tokens * mask).sum(axis=1) / mask.sum(axis=1)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            f3 = time.perf_counter()
        t4b = time.perf_counter()
        emb = encode_query([q])
        t4c = time.perf_counter()
        scores, rows = index.search(emb, args.k)
        t5 = time.perf_counter()
        hits = [
            {"id": docids[r], "score": float(s), "title": passages[r].get("title", ""), "text": passages[r]["text"]}
            for r, s in zip(rows[0], scores[0])
            if r >= 0
        ]
        t6 = time.perf_counter()
        assert hits
        times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, f1 - t4, f2 - f1, f3 - f2, t4c - t4b, t5 - t4c, t6 - t5)
        for name, dt in zip(stages, times, strict=True):
            stages[name].append(dt)
    stats = {name: Stats.of(v) for name, v in stages.items()}
    parts = stats["tokenize"].p50 + stats["transformer forward"].p50 + stats["pooling + normalise"].p50
    request_p50 = stats["service encode total"].p50 + stats["FAISS search"].p50 + stats["assembly"].p50
    lines = [
        f"# /search request profile: backend {backend}, threads {threads.torch}, k={args.k}, n={args.n}",
        f"student {ws.student_dir}; index {view.description}",
        *[f"NOTE {n}" for n in ws.notes],
        "",
        "tokenize .. encode() total: SentenceTransformer.encode; fast: ..: kd.backends.OnnxQueryEncoder,",
        "what the service runs on the ONNX backends (service encode total = it, end to end)",
        "",
        f"{'stage':<28} {'p50 ms':>9} {'p99 ms':>9} {'share of request p50':>22}",
    ]
    for name, s in stats.items():
        share = s.p50 / request_p50 * 100 if name in ("service encode total", "FAISS search", "assembly") else float("nan")
        lines.append(f"{name:<28} {fmt(s.p50, 3):>9} {fmt(s.p99, 3):>9} {fmt(share, 1):>21}%")
    lines += [
        f"{'(encode() overhead)':<28} {fmt(stats['encode() total'].p50 - parts, 3):>9}   "
        "= encode() - (tokenize + forward + pooling): batching, sorting, tensor conversions",
        f"{'request (sum of p50s)':<28} {fmt(request_p50, 3):>9}",
        "",
    ]

    # ---------------------------------------------------------------- 2. profiler
    tool = args.tool
    if tool == "auto":
        try:
            import pyinstrument  # noqa: F401

            tool = "pyinstrument"
        except ImportError:
            tool = "cprofile"
    if tool == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        for i in range(args.n):
            request(queries[i % nq])
        profiler.stop()
        lines += [f"## pyinstrument over {args.n} requests", profiler.output_text(unicode=False, color=False)]
    else:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.n):
            request(queries[i % nq])
        prof.disable()
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(args.top)
            text = buf.getvalue()
            lines += [f"## cProfile over {args.n} requests, by {key}", text[text.find("   ncalls") :].rstrip(), ""]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
