"""Bounded load test of the search service, on loopback only.

Sends a fixed number of POST /search requests (rerank off, then rerank on) from `--concurrency`
threads, each scenario capped at `--time-cap` seconds, and stops by itself. Reports client-side
p50/p95/p99 latency, the server's own `latency_ms` p50 and p99, throughput and errors; writes JSON to
bench/results/load.json and prints a markdown table.

Either point it at a running server (`--url http://127.0.0.1:8000`; loopback addresses only), or
let it start `python -m service` itself on a free loopback port:

    python bench/load.py --student artifacts/student --index artifacts/index --requests 300 --concurrency 4
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

if __package__ in (None, ""):  # `python bench/load.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.portable import REPO, portable  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_QUERIES = [
    "Why is it called Python?",
    "How do I read a file line by line?",
    "What is a decorator?",
    "How do I make a copy of a list?",
    "Why are default argument values shared between objects?",
    "How can I find the methods or attributes of an object?",
    "How do I convert a string to a number?",
    "What is the global interpreter lock?",
    "How do I run a subprocess and capture its output?",
    "How do I sort a dictionary by value?",
    "What does the yield keyword do?",
    "How do I create a virtual environment?",
    "How do I parse JSON?",
    "How are exceptions handled?",
    "What is the difference between a list and a tuple?",
    "How do I format a string with variables?",
    "How do I get the current time?",
    "How can I make a Python script executable on Unix?",
    "What are generators used for?",
    "How do I use regular expressions?",
]


@dataclass
class ScenarioResult:
    name: str
    requested: int
    completed: int = 0
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    concurrency: int = 1
    wall_s: float = 0.0
    stopped_by_time_cap: bool = False
    throughput_rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    skipped: str | None = None


def read_queries(path: Path | None) -> list[str]:
    """Canonical `queries/<split>.jsonl` ({"_id", "text"}) or one query per line; default: a built-in list."""
    if path is None:
        return DEFAULT_QUERIES
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            out.append(str(json.loads(line)["text"]))
        else:
            out.append(line.strip())
    if not out:
        raise SystemExit(f"error: {path} holds no queries")
    return out


def check_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"error: --url host {host!r} is not loopback; this script only loads 127.0.0.1")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_service(
    extra: list[str],
    log_path: Path | None,
    startup_timeout: float,
    name: str = "service",
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`python -m service <extra>` on a free loopback port until /health answers; terminated on the way out.

    `env`: the service's environment (default: this process's), e.g. a cache folder of its own.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]
    log = log_path.open("w+") if log_path is not None else tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"error: {name} exited during startup:\n{log.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {name} was not ready within {startup_timeout}s")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def started_server(args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    extra = []
    for flag, value in (("--student", args.student), ("--index", args.index), ("--params", args.params)):
        if value is not None:
            extra += [flag, str(value)]
    if args.no_rerank:
        extra.append("--no-rerank")
    return running_service(extra, None, args.startup_timeout)


class Conn:
    """One keep-alive HTTP/1.1 connection (stdlib `http.client`).

    The client shares the CPUs with the server here, so its own cost lands in every latency; the
    stdlib connection does far less Python per request than httpx (a compiled client, such as wrk or
    a Go/Rust caller, less still).
    """

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", path, json.dumps(body).encode(), self.headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request reconnects
            raise

    def close(self) -> None:
        self.conn.close()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def run_scenario(
    name: str,
    url: str,
    queries: list[str],
    body: dict[str, Any],
    n: int,
    concurrency: int,
    time_cap: float,
    warmup: int,
) -> ScenarioResult:
    """`n` requests from `concurrency` threads, or fewer if `time_cap` seconds pass first."""
    result = ScenarioResult(name=name, requested=n, concurrency=concurrency)
    client = Conn(url, 60)
    for i in range(warmup):
        client.post("/search", {**body, "query": queries[i % len(queries)]})
    client.close()

    lock = threading.Lock()
    counter = iter(range(n))
    latencies: list[float] = []
    server: list[float] = []
    deadline = time.perf_counter() + time_cap

    def worker() -> None:
        client = Conn(url, max(time_cap, 1.0))
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                if time.perf_counter() > deadline:
                    result.stopped_by_time_cap = True
                    return
                start = time.perf_counter()
                error = None
                server_ms = 0.0
                try:
                    status, raw = client.post("/search", {**body, "query": queries[i % len(queries)]})
                    if status == 200:
                        server_ms = float(json.loads(raw)["latency_ms"])
                    else:
                        error = f"HTTP {status}: {raw[:200].decode(errors='replace')}"
                except (OSError, http.client.HTTPException) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    result.completed += 1
                    if error is None:
                        result.ok += 1
                        latencies.append(elapsed)
                        server.append(server_ms)
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(error)
        finally:
            client.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.throughput_rps = round(result.completed / result.wall_s, 2) if result.wall_s else 0.0
    result.p50_ms, result.p95_ms, result.p99_ms = (percentile(latencies, q) for q in (50, 95, 99))
    result.mean_ms = round(float(np.mean(latencies)), 3) if latencies else None
    result.server_p50_ms, result.server_p99_ms = percentile(server, 50), percentile(server, 99)
    return result


def markdown(results: list[ScenarioResult]) -> str:
    rows = [
        "| scenario | requests | errors | concurrency | p50 ms | p95 ms | p99 ms | server p50 ms | server p99 ms | req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.skipped:
            rows.append(f"| {r.name} | skipped: {r.skipped} | | | | | | | | |")
            continue
        capped = " (time cap)" if r.stopped_by_time_cap else ""
        rows.append(
            f"| {r.name} | {r.completed}/{r.requested}{capped} | {r.errors} | {r.concurrency} | {r.p50_ms} | "
            f"{r.p95_ms} | {r.p99_ms} | {r.server_p50_ms} | {r.server_p99_ms} | {r.throughput_rps} |"
        )
    return "\n".join(rows)


def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    ready = httpx.get(f"{url}/ready", timeout=10).json()
    queries = read_queries(args.queries)
    base = {"k": args.k}
    results = [run_scenario("search", url, queries, base, args.requests, args.concurrency, args.time_cap, args.warmup)]
    if args.rerank_requests <= 0:
        results.append(ScenarioResult(name="search_rerank", requested=0, skipped="--rerank-requests 0"))
    elif not ready.get("rerank_available"):
        results.append(ScenarioResult(name="search_rerank", requested=0, skipped="server has no teacher loaded"))
    else:
        body = {**base, "rerank": True, "rerank_depth": args.rerank_depth}
        results.append(
            run_scenario(
                "search_rerank", url, queries, body, args.rerank_requests, args.concurrency, args.time_cap, args.warmup
            )
        )
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": url,
        "note": "client threads and server share this machine's CPUs (loopback); latencies include queueing",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "server": {
            key: ready.get(key)
            for key in ("student", "teacher", "corpus_size", "index", "git_commit", "dvc_experiment")
        },
        "settings": {
            "requests": args.requests,
            "rerank_requests": args.rerank_requests,
            "concurrency": args.concurrency,
            "time_cap_s": args.time_cap,
            "warmup": args.warmup,
            "k": args.k,
            "rerank_depth": args.rerank_depth,
            "distinct_queries": len(queries),
        },
        "scenarios": {r.name: asdict(r) for r in results},
        "table": markdown(results),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server on loopback; omit to start `python -m service` here")
    p.add_argument("--student", type=Path, help="passed to the started server")
    p.add_argument("--index", type=Path, help="passed to the started server")
    p.add_argument("--params", type=Path, help="passed to the started server")
    p.add_argument("--no-rerank", action="store_true", help="start the server without the teacher")
    p.add_argument("--requests", type=int, default=200, help="requests with rerank off (default 200)")
    p.add_argument("--rerank-requests", type=int, default=40, help="requests with rerank on (default 40; 0 skips)")
    p.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario before it stops (default 60)")
    p.add_argument("--warmup", type=int, default=5, help="uncounted requests before each scenario (default 5)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rerank-depth", type=int, default=50)
    p.add_argument("--queries", type=Path, help="queries file: canonical queries/<split>.jsonl or one per line")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for a started server")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.time_cap <= 0:
        p.error("--requests and --concurrency must be >= 1 and --time-cap > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        report = bench(check_loopback(args.url), args)
    else:
        with started_server(args) as url:
            report = bench(url, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(portable(report), indent=2) + "\n")
    os.replace(tmp, args.out)
    print(report["table"])
    print(f"\nwrote {args.out}")
    errors = sum(s.get("errors", 0) for s in report["scenarios"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
