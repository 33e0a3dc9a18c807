"""The service's latency figures (docs/service.md), measured over loopback (bounded, stops by itself).

Starts `python -m service` twice on free loopback ports from the same artifacts:
  A: auth none, no rate limit;   B: auth api_key (a key made here, argon2id file) + a rate limit too
  high to trigger, so every request pays for the key check and the bucket.
Then, one client at a time:
  1. /search rerank off, k=10: p50/p99 on A and on B, in alternating rounds (same run, same load).
  2. /search rerank over the top 100 (k=10, rerank_depth=100) on A: p50/p99.
  3. mixed on A: one client sending rerank requests back to back + four sending plain searches,
     for a fixed number of plain requests: plain p50/p99, rerank p50, status counts (429/503 are
     the intended refusals; anything else is an error).
  4. the same four plain clients without the rerank client (the control: what the reranks add to
     the plain tail, apart from what four closed-loop clients on these cores cost by themselves).
  5. with `--plain-rate R`: the mixed load again, each plain client paced at R requests/s (open
     loop: latency counts from each request's scheduled time), i.e. a load below saturation.
Writes bench/results/service_load.json and prints a markdown table.

    python -m bench.service_load --student artifacts/student --index artifacts/index \
        --teacher-corpus artifacts/teacher_corpus --params params.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from bench.load import DEFAULT_QUERIES, REPO, Conn, running_service
from bench.portable import portable

PLAIN = {"k": 10}
RERANK = {"k": 10, "rerank": True, "rerank_depth": 100}


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def server(params: Path, args: argparse.Namespace, name: str, log_dir: Path) -> contextlib.AbstractContextManager[str]:
    extra = ["--params", str(params)]
    for flag, value in (
        ("--student", args.student),
        ("--index", args.index),
        ("--teacher-corpus", args.teacher_corpus),
    ):
        if value is not None:
            extra += [flag, str(value)]
    return running_service(extra, log_dir / f"{name}.log", args.startup_timeout, f"server {name}")


def client(url: str, key: str | None) -> Conn:
    c = Conn(url, 120)
    if key:
        c.headers["X-API-Key"] = key
    return c


def timed(c: Conn, body: dict[str, Any], query: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    status, _ = c.post("/search", {**body, "query": query})
    return status, (time.perf_counter() - t0) * 1000


def sequential(
    url: str, key: str | None, body: dict[str, Any], n: int, warmup: int
) -> tuple[list[float], Counter[int]]:
    c = client(url, key)
    try:
        for i in range(warmup):
            timed(c, body, DEFAULT_QUERIES[i % len(DEFAULT_QUERIES)])
        lat: list[float] = []
        codes: Counter[int] = Counter()
        for i in range(n):
            status, ms = timed(c, body, DEFAULT_QUERIES[i % len(DEFAULT_QUERIES)])
            codes[status] += 1
            if status == 200:
                lat.append(ms)
        return lat, codes
    finally:
        c.close()


def mixed(
    url: str, plain_n: int, plain_clients: int, time_cap: float, rerank_client: bool = True, rate: float = 0.0
) -> dict[str, Any]:
    """One rerank client back to back (unless `rerank_client` is False) + `plain_clients` plain
    clients sharing `plain_n` requests.

    `rate` 0: each plain client sends its next request as soon as the last one returns (closed loop:
    the clients saturate the server). `rate` > 0: each sends on a fixed schedule of `rate` requests/s
    (clients staggered); a request's latency counts from its scheduled time, so a client that falls
    behind still pays for the wait (no coordinated omission).
    """
    stop = threading.Event()
    lock = threading.Lock()
    plain_lat: list[float] = []
    rerank_lat: list[float] = []
    plain_codes: Counter[int] = Counter()
    rerank_codes: Counter[int] = Counter()
    errors: list[str] = []
    counter = iter(range(plain_n))
    deadline = time.perf_counter() + time_cap

    def send(c: Conn, kind: str, body: dict[str, Any], i: int, codes: Counter[int], lat: list[float], lag: float = 0.0) -> None:
        """One request with the `i`-th query; its status counted, its latency (plus `lag`) kept when 200."""
        try:
            status, ms = timed(c, body, DEFAULT_QUERIES[i % len(DEFAULT_QUERIES)])
        except OSError as exc:
            with lock:
                errors.append(f"{kind} {type(exc).__name__}: {exc}")
            return
        with lock:
            codes[status] += 1
            if status == 200:
                lat.append(ms + lag)

    def reranker() -> None:
        c = client(url, None)
        i = 0
        try:
            while not stop.is_set() and time.perf_counter() < deadline:
                send(c, "rerank", RERANK, i, rerank_codes, rerank_lat)
                i += 1
        finally:
            c.close()

    def plain(slot: int) -> None:
        c = client(url, None)
        sent = 0
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                lag = 0.0
                if rate > 0:
                    due = t0 + (sent + slot / plain_clients) / rate
                    sent += 1
                    now = time.perf_counter()
                    if now < due:
                        time.sleep(due - now)
                    lag = max(0.0, time.perf_counter() - due) * 1000
                send(c, "plain", PLAIN, i, plain_codes, plain_lat, lag)
        finally:
            c.close()

    r = threading.Thread(target=reranker, daemon=True)
    if rerank_client:
        r.start()
        time.sleep(0.5)  # the rerank client is busy before the plain clients start
    t0 = time.perf_counter()
    ps = [threading.Thread(target=plain, args=(n,), daemon=True) for n in range(plain_clients)]
    for t in ps:
        t.start()
    for t in ps:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    if rerank_client:
        r.join(timeout=120)
    unintended = sum(n for s, n in (plain_codes + rerank_codes).items() if s not in (200, 429, 503)) + len(errors)
    return {
        "plain_requests": sum(plain_codes.values()),
        "plain_p50_ms": pct(plain_lat, 50),
        "plain_p99_ms": pct(plain_lat, 99),
        "plain_rps": round(sum(plain_codes.values()) / wall, 1) if wall else None,
        "plain_status": dict(plain_codes),
        "rerank_requests": sum(rerank_codes.values()),
        "rerank_p50_ms": pct(rerank_lat, 50),
        "rerank_status": dict(rerank_codes),
        "intended_refusals_429_503": sum(n for s, n in (plain_codes + rerank_codes).items() if s in (429, 503)),
        "errors": unintended,
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "plain_rate_per_client": rate or "closed loop",
    }


def parse_overrides(items: list[str], p: argparse.ArgumentParser) -> dict[str, Any]:
    """`--service KEY=VALUE` pairs (values read as YAML); auth and rate limits are this bench's own."""
    from kd.config import ServiceConfig

    out: dict[str, Any] = {}
    known = set(ServiceConfig.__dataclass_fields__)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            p.error(f"--service {item!r}: use KEY=VALUE with KEY one of service.* ({', '.join(sorted(known))})")
        if key in ("auth", "api_keys_file", "rate_limit_per_minute", "rate_limit_burst"):
            p.error(f"--service {key}: set by this bench (server A without, server B with auth and a rate limit)")
        out[key] = yaml.safe_load(value)
    return out


def write_params(base: Path, out: Path, **service: Any) -> Path:
    raw = yaml.safe_load(base.read_text())
    raw.setdefault("service", {}).update(service)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def cpu_flags() -> dict[str, Any]:
    from kd.models.runtime import cpu_flags as flags_of_this_cpu
    from kd.models.runtime import use_bf16

    flags = flags_of_this_cpu()
    return {
        "bf16": use_bf16("auto"),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "avx2": "avx2" in flags,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", type=Path)
    p.add_argument("--index", type=Path)
    p.add_argument("--teacher-corpus", type=Path)
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--requests", type=int, default=400, help="plain requests per server per round part (default 400)")
    p.add_argument("--rounds", type=int, default=2, help="alternating A/B rounds (default 2)")
    p.add_argument("--rerank-requests", type=int, default=40)
    p.add_argument("--mixed-plain", type=int, default=1200, help="plain requests in the mixed load (default 1200)")
    p.add_argument("--time-cap", type=float, default=120.0, help="seconds cap for the mixed load")
    p.add_argument("--plain-rate", type=float, default=0.0, metavar="R",
                   help="also run the mixed load paced: each plain client at R requests/s (default 0: not run)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "service_load.json")
    p.add_argument("--service", action="append", default=[], metavar="KEY=VALUE",
                   help="a service.* override for both servers, e.g. --service search_workers=2 (repeatable)")  # fmt: skip
    args = p.parse_args(argv)
    if min(args.requests, args.rounds, args.rerank_requests, args.mixed_plain) < 1:
        p.error("counts must be >= 1")
    if args.plain_rate < 0:
        p.error("--plain-rate must be >= 0 (0: do not run the paced load)")
    overrides = parse_overrides(args.service, p)

    from service.keys import create_key

    with tempfile.TemporaryDirectory(prefix="kd-bench-") as tmp_s, ExitStack() as stack:
        tmp = Path(tmp_s)
        key, _ = create_key(tmp / "keys.json", "bench")
        params_a = write_params(args.params, tmp / "a.yaml", **overrides, auth="none", rate_limit_per_minute=0)
        params_b = write_params(
            args.params, tmp / "b.yaml", **overrides, auth="api_key", api_keys_file=str(tmp / "keys.json"),
            rate_limit_per_minute=6_000_000, rate_limit_burst=100_000,
        )  # fmt: skip
        url_a = stack.enter_context(server(params_a, args, "a", tmp))
        url_b = stack.enter_context(server(params_b, args, "b", tmp))
        ready = httpx.get(f"{url_a}/ready", timeout=10).json()
        service_a = yaml.safe_load(params_a.read_text()).get("service", {})

        plain: dict[str, list[float]] = {"off": [], "on": []}
        codes: dict[str, Counter[int]] = {"off": Counter(), "on": Counter()}
        for _ in range(args.rounds):
            for name, url, k in (("off", url_a, None), ("on", url_b, key)):
                lat, c = sequential(url, k, PLAIN, args.requests, args.warmup)
                plain[name] += lat
                codes[name] += c
        stack.close()  # B is done; A alone for the rerank and mixed scenarios
        url_a = stack.enter_context(server(params_a, args, "a2", tmp))
        rerank_lat, rerank_codes = sequential(url_a, None, RERANK, args.rerank_requests, 3)
        mix = mixed(url_a, args.mixed_plain, 4, args.time_cap)
        alone = mixed(url_a, args.mixed_plain, 4, args.time_cap, rerank_client=False)
        paced = mixed(url_a, args.mixed_plain, 4, args.time_cap, rate=args.plain_rate) if args.plain_rate else None

    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), **cpu_flags()},
        "server": {k: ready.get(k) for k in ("student", "teacher", "corpus_size", "index", "limits")},
        "service_config_a": service_a,
        "plain_auth_rate_limit_off": {"n": len(plain["off"]), "p50_ms": pct(plain["off"], 50),
                                      "p99_ms": pct(plain["off"], 99), "status": dict(codes["off"])},
        "plain_auth_rate_limit_on": {"n": len(plain["on"]), "p50_ms": pct(plain["on"], 50),
                                     "p99_ms": pct(plain["on"], 99), "status": dict(codes["on"])},
        "rerank_top100": {"n": len(rerank_lat), "p50_ms": pct(rerank_lat, 50), "p99_ms": pct(rerank_lat, 99),
                          "status": dict(rerank_codes)},
        "mixed_1_rerank_4_plain": mix,
        "control_4_plain_no_rerank": alone,
        "mixed_paced": paced,
        "settings": vars(args) | {"plain_body": PLAIN, "rerank_body": RERANK, "service_overrides": overrides},
    }  # fmt: skip
    report["settings"] = {k: str(v) for k, v in report["settings"].items()}
    rows = [
        "| scenario | n | p50 ms | p99 ms | notes |",
        "|---|---:|---:|---:|---|",
        f"| /search rerank off, auth+rate limit off | {report['plain_auth_rate_limit_off']['n']} | "
        f"{report['plain_auth_rate_limit_off']['p50_ms']} | {report['plain_auth_rate_limit_off']['p99_ms']} | 1 client |",
        f"| /search rerank off, auth+rate limit on | {report['plain_auth_rate_limit_on']['n']} | "
        f"{report['plain_auth_rate_limit_on']['p50_ms']} | {report['plain_auth_rate_limit_on']['p99_ms']} | 1 client, X-API-Key |",
        f"| /search rerank top 100 (k=10) | {report['rerank_top100']['n']} | {report['rerank_top100']['p50_ms']} | "
        f"{report['rerank_top100']['p99_ms']} | 1 client, teacher {ready.get('teacher')} |",
        f"| mixed: plain searches | {mix['plain_requests']} | {mix['plain_p50_ms']} | {mix['plain_p99_ms']} | "
        f"4 plain clients + 1 rerank client; status {mix['plain_status']} |",
        f"| mixed: reranks | {mix['rerank_requests']} | {mix['rerank_p50_ms']} | | status {mix['rerank_status']}; "
        f"unintended errors {mix['errors']} |",
        f"| control: the 4 plain clients alone | {alone['plain_requests']} | {alone['plain_p50_ms']} | "
        f"{alone['plain_p99_ms']} | no rerank client; status {alone['plain_status']} |",
    ]
    if paced is not None:
        rows.append(
            f"| mixed, paced: plain searches | {paced['plain_requests']} | {paced['plain_p50_ms']} | "
            f"{paced['plain_p99_ms']} | 4 plain clients at {args.plain_rate:g} req/s each ({paced['plain_rps']} req/s "
            f"sent) + 1 rerank client ({paced['rerank_requests']} reranks); status {paced['plain_status']}; "
            f"unintended errors {paced['errors']} |"
        )
    report["table"] = "\n".join(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(portable(report), indent=2) + "\n")
    print(report["table"])
    print(f"\nbf16: {report['machine']['bf16']} (avx512_bf16 {report['machine']['avx512_bf16']}, "
          f"amx {report['machine']['amx_bf16']}); wrote {args.out}")  # fmt: skip
    return 1 if mix["errors"] or alone["errors"] or (paced or {}).get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
