"""What a request runs: the worker threads (`Runner`: plain searches, reranks at a lower priority) and the
search, batch and encode calls on the `Engine`, with the rerank budget checked before any work.

No `from __future__ import annotations`: Litestar reads the real types of the dependencies.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.to_thread
from litestar.datastructures import State
from litestar.exceptions import ServiceUnavailableException

from kd.config import ServiceConfig
from service.engine import Engine
from service.errors import bad_request
from service.ops import Metrics
from service.schemas import (
    BatchItem,
    BatchResponse,
    EncodeResponse,
    SearchHit,
    SearchResponse,
)
from service.schemas import rerank_depth as requested_depth

log = logging.getLogger("service")


def _lower_priority(nice: int) -> None:
    """Thread initializer: this thread's nice value (Linux keeps one per thread; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # a sandbox without setpriority: reranks just run at normal priority
        logging.getLogger(__name__).warning("service.rerank_nice=%d not applied: %s", nice, exc)


class Runner:
    """Two thread pools: plain work (search, encode) and reranks; reranks beyond the cap get 503 at once.

    Rerank threads are their own (never returned to the shared pool) and run at `service.rerank_nice`,
    so on a machine with few cores the scheduler gives plain searches the CPU first and a rerank takes
    what is left: plain latency holds under rerank load, and reranks slow down instead.
    """

    def __init__(self, cfg: ServiceConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.plain = anyio.CapacityLimiter(cfg.search_workers)
        self.rerank_pool = ThreadPoolExecutor(
            cfg.max_concurrent_reranks, "rerank", initializer=_lower_priority, initargs=(cfg.rerank_nice,)
        )
        self.reranks = 0

    async def run_plain(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.plain)

    async def run_rerank(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.reranks >= self.cfg.max_concurrent_reranks:
            self.metrics.reranks_rejected.inc()
            raise ServiceUnavailableException(
                detail=(
                    f"all {self.cfg.max_concurrent_reranks} rerank slot(s) are busy (service.max_concurrent_reranks): "
                    f"retry in {self.cfg.retry_after_s} s, or search without rerank"
                ),
                headers={"Retry-After": str(self.cfg.retry_after_s)},
            )
        self.reranks += 1
        self.metrics.reranks_in_flight.set(self.reranks)
        work = asyncio.get_running_loop().run_in_executor(self.rerank_pool, partial(fn, *args))
        work.add_done_callback(self._rerank_done)  # the slot frees when the thread does, not when a client leaves
        return await asyncio.shield(work)

    def _rerank_done(self, _: "asyncio.Future[Any]") -> None:
        self.reranks -= 1
        self.metrics.reranks_in_flight.set(self.reranks)


def _depth(engine: Engine, data: Any) -> int:
    try:
        depth = requested_depth(data)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    return min(50, engine.settings.service.max_rerank_depth) if depth is None else depth


def check_rerank(engine: Engine, n_queries: int, k: int, depth: int) -> None:
    """Rerank needs a teacher, and queries x candidates stays under the pair cap of the rerank mode."""
    if not engine.rerank_available:
        raise bad_request(
            "rerank=true needs the teacher, which this server did not load: start it with "
            "service.rerank=true (and without --no-rerank), or send rerank=false"
        )
    cap, key = engine.rerank_pair_cap()
    pairs = n_queries * max(k, depth)
    if pairs > cap:
        raise bad_request(
            f"rerank over {n_queries} quer{'y' if n_queries == 1 else 'ies'} x {max(k, depth)} candidates "
            f"(max of k and rerank_depth) = {pairs} pairs; the limit is {cap} ({key}, teacher rerank mode "
            f"{engine.rerank_mode}): send fewer queries or a smaller rerank_depth"
        )


def _hits(engine: Engine, ranked: list[tuple[int, float]]) -> list[SearchHit]:
    passages = engine.passages
    out = []
    for rank, (row, score) in enumerate(ranked, 1):
        p = passages[row]
        out.append(SearchHit(doc_id=p["_id"], title=p["title"], text=p["text"], score=score, rank=rank))
    return out


def engine_of(state: State) -> Engine:
    engine: Engine | None = state.get("engine")
    if engine is None:
        raise ServiceUnavailableException(detail="the search engine is not loaded yet")
    return engine


def runner_of(state: State) -> Runner:
    runner: Runner = state["runner"]
    return runner


class SearchLike(Protocol):
    query: str
    k: int
    rerank: bool


class BatchLike(Protocol):
    queries: list[str]
    k: int
    rerank: bool


class EncodeLike(Protocol):
    texts: list[str]
    normalize: bool


async def run_search(data: SearchLike, engine: Engine, runner: Runner) -> SearchResponse:
    start = time.perf_counter()
    depth = _depth(engine, data)
    if data.rerank:
        check_rerank(engine, 1, data.k, depth)
        (ranked,) = await runner.run_rerank(engine.search, [data.query], data.k, True, depth)
    else:
        (ranked,) = await runner.run_plain(engine.search, [data.query], data.k)
    results = _hits(engine, ranked)
    return SearchResponse(
        query=data.query,
        results=results,
        total_results=len(results),
        reranked=data.rerank,
        latency_ms=(time.perf_counter() - start) * 1000,
    )


async def run_batch(data: BatchLike, engine: Engine, runner: Runner) -> BatchResponse:
    start = time.perf_counter()
    depth = _depth(engine, data)
    if data.rerank:
        check_rerank(engine, len(data.queries), data.k, depth)
        ranked = await runner.run_rerank(engine.search, data.queries, data.k, True, depth)
    else:
        ranked = await runner.run_plain(engine.search, data.queries, data.k)
    items = []
    for q, r in zip(data.queries, ranked, strict=True):
        hits = _hits(engine, r)
        items.append(BatchItem(query=q, results=hits, total_results=len(hits)))
    return BatchResponse(
        results=items, total_queries=len(items), reranked=data.rerank, latency_ms=(time.perf_counter() - start) * 1000
    )


async def run_encode(data: EncodeLike, engine: Engine, runner: Runner) -> EncodeResponse:
    start = time.perf_counter()
    emb = await runner.run_plain(engine.encode_texts, data.texts, data.normalize)
    return EncodeResponse(
        embeddings=emb.tolist(),
        dim=int(emb.shape[1]),
        normalized=data.normalize,
        model=engine.student_name,
        latency_ms=(time.perf_counter() - start) * 1000,
    )


