"""Latency of the shipped search path, in process: `service.engine.Engine` over the pipeline's artifacts.

    python -m bench.latency                               # ./artifacts + ./params.yaml, student.backend from it
    python -m bench.latency --backends onnx onnx-int8 torch --profile 300
    python -m bench.latency --root /path/to/a/copy --no-rerank

Times what `POST /search` runs, minus HTTP (bench/service_load.py adds HTTP, auth, rate limits and
concurrency), through the same `load_engine` the service calls, so a change to the service's code
shows up here:
  * `encode`: the student's query encode (`Engine.encode`: the ONNX fast path for onnx backends);
  * `faiss@10`, `faiss@100`: the index search alone (`Engine.faiss`);
  * `encode xN (one call)`: one ONNX call on N different queries (`Engine.fast_encode`): what sharing
    one call among N concurrent searches would cost (bench/README.md: 2.6x one query at N=4, so the
    service gives each search its own call);
  * `search`: the whole plain search (`Engine.search`, k=10);
  * `rerank@N`: the rerank path (`Engine.search` with rerank over the student's top N): with a
    bi-encoder teacher and artifacts/teacher_corpus, one teacher query encode plus dot products.
Each backend gets its own engine; calls are interleaved (a, b, c, a, b, c, ...) over the test queries so
a slow spell of a shared machine hits every variant alike. `--profile N` adds a cProfile of N plain
searches of the first backend (bench/results/profile_request.txt).

Writes bench/results/latency.json and bench/results/latency.md (also printed).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/latency.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    RESULTS,
    Stats,
    fmt,
    log,
    machine_info,
    portable_text,
    round_robin,
    setup_logging,
    write_results,
)
from kd import artifacts  # noqa: E402
from kd.choices import check_backend  # noqa: E402
from kd.config import Params  # noqa: E402
from kd.data.io import read_queries  # noqa: E402
from kd.errors import KDError  # noqa: E402
from kd.params import load_params
from kd.retrieval.search import search_rows  # noqa: E402
from service.engine import Engine  # noqa: E402
from service.settings import Settings
from service.startup import load_engine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="pipeline checkout to read (default: .)")
    ap.add_argument("--backends", nargs="+", default=None, help="student backends (default: student.backend)")
    ap.add_argument("--reps", type=int, default=300, help="interleaved rounds of the fast calls")
    ap.add_argument("--rerank-reps", type=int, default=60, help="rounds that also rerank")
    ap.add_argument("--rerank-depth", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-rerank", action="store_true", help="skip the teacher (no rerank timing)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N plain searches")
    ap.add_argument("--encode-batches", type=int, nargs="*", default=[4, 8], metavar="N",
                    help="also time one ONNX call on N different queries, default 4 8")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args(argv)


def engines(root: Path, params: Params, backends: list[str], rerank: bool) -> dict[str, Engine]:
    """One engine per backend, loaded the way the service loads it; only the first holds the teacher."""
    out: dict[str, Engine] = {}
    for i, backend in enumerate(backends):
        check_backend(backend, "--backends")
        p = dataclasses.replace(params, student=dataclasses.replace(params.student, backend=backend))
        started = time.perf_counter()
        settings = Settings(root / artifacts.STUDENT, root / artifacts.INDEX, p, rerank=rerank and i == 0)
        engine = load_engine(settings)
        engine.warm_up()
        log.info("engine %-9s loaded in %.1f s (rerank: %s)", backend, time.perf_counter() - started,
                 engine.rerank_mode or "off")  # fmt: skip
        out[backend] = engine
    return out


def calls(
    engines_: dict[str, Engine], queries: list[str], depth: int, batches: Sequence[int] = ()
) -> dict[str, Callable[[int], Any]]:
    def plain(e: Engine, i: int) -> Any:
        return e.search([queries[i % len(queries)]], 10)

    def encode(e: Engine, i: int) -> Any:
        return e.encode([queries[i % len(queries)]])

    def faiss(e: Engine, emb: Any, k: int, i: int) -> Any:
        return search_rows(e.faiss, emb, k)

    def shared(e: Engine, n: int, i: int) -> Any:  # one coalesced call: n different queries, padded together
        assert e.fast_encode is not None
        return e.fast_encode([queries[(i + j) % len(queries)] for j in range(n)])

    out: dict[str, Callable[[int], Any]] = {}
    for backend, e in engines_.items():
        emb = e.encode(queries[:1])
        out[f"{backend} encode"] = partial(encode, e)
        out[f"{backend} search"] = partial(plain, e)
        out[f"{backend} faiss@10"] = partial(faiss, e, emb, 10)
        out[f"{backend} faiss@{depth}"] = partial(faiss, e, emb, depth)
        if e.fast_encode is not None:
            for n in batches:
                out[f"{backend} encode x{n} (one call)"] = partial(shared, e, n)
    return out


def profile(engine: Engine, queries: list[str], n: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        engine.search([queries[i % len(queries)]], 10)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    root = args.root.resolve()
    try:
        params = load_params(root / "params.yaml")
        backends = args.backends or [params.student.backend]
        loaded = engines(root, params, backends, rerank=not args.no_rerank)
        queries = list(read_queries(root / "data/queries/test.jsonl").values())
    except KDError as exc:  # a missing artifact or a bad config value: the message names the fix
        sys.exit(f"error: {exc}")
    first = loaded[backends[0]]

    log.info("plain calls: %d interleaved rounds over %d test queries", args.reps, len(queries))
    times = round_robin(calls(loaded, queries, args.rerank_depth, args.encode_batches), args.reps, args.warmup)
    if first.rerank_available:
        key = f"{backends[0]} rerank@{args.rerank_depth}"
        log.info("rerank: %d rounds (mode %s), interleaved with plain searches", args.rerank_reps, first.rerank_mode)
        both = round_robin(
            {
                key: lambda i: first.search([queries[i % len(queries)]], 10, rerank=True, rerank_depth=args.rerank_depth),
                f"{backends[0]} search (beside rerank)": lambda i: first.search([queries[i % len(queries)]], 10),
            },
            args.rerank_reps, 2,
        )  # fmt: skip
        times.update(both)
    stats = {name: Stats.of(sec) for name, sec in times.items()}

    lines = [
        "# bench.latency: the shipped search path in process (service.engine.Engine, no HTTP)", "",
        f"root `{root}`; student `{first.student_name}`; mode `{first.ready_info.mode}`; {len(first.passages)} passages; rerank mode "
        f"`{first.rerank_mode or 'off'}`; threads `service.threads={params.service.threads}`", "",
        "| call | n | p50 ms | p90 ms | p99 ms |", "|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [f"| {n} | {s.n} | {fmt(s.p50)} | {fmt(s.p90)} | {fmt(s.p99)} |" for n, s in stats.items()]
    data: dict[str, Any] = {
        "machine": machine_info(),
        "params": {"student": dataclasses.asdict(params.student), "service.threads": params.service.threads},
        "rerank_mode": first.rerank_mode,
        "stats": {n: s.as_dict() for n, s in stats.items()},
    }
    if args.profile:
        text = profile(first, queries, args.profile)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile_request.txt").write_text(portable_text(text, (root,)))
        lines += ["", f"cProfile of {args.profile} plain searches ({backends[0]}): {args.out / 'profile_request.txt'}"]
    js, md = write_results("latency", data, "\n".join(lines) + "\n", args.out, roots=(root,))
    print("\n".join(lines))
    log.info("wrote %s and %s", js, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
