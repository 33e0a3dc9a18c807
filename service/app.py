"""The Litestar app: `create_app(settings)` wires the loaded `Engine` into the HTTP handlers.

The request types come from the config (`service.schemas.request_types`), so handlers are built per
app inside `create_app` (no `from __future__ import annotations` here: Litestar reads the real types).

Threads: plain searches and /encode run on a limiter of `service.search_workers` threads; reranks on
`service.max_concurrent_reranks` threads of their own, at a lower priority (`service.rerank_nice`). A
rerank that finds every rerank slot busy gets 503 + Retry-After at once (it never queues), and plain
searches never wait behind a rerank. Every
bad request gets a 4xx JSON `{"status_code", "detail"}` whose detail names the field and the limit.
"""

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.to_thread
import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException, ServiceUnavailableException, ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, OpenAPIType, Reference, Schema, SecurityScheme
from litestar.params import JSONBody
from litestar.typing import FieldDefinition

from kd.config import ServiceConfig
from service.engine import Engine, Settings, check_service_config, load_engine
from service.keys import KeyStore
from service.ops import REQUEST_ID, Gate, Metrics, TokenBuckets, gate_middleware, handler_error_headers
from service.page import PAGE
from service.schemas import (
    NOT_BLANK,
    BatchItem,
    BatchResponse,
    EncodeResponse,
    ErrorResponse,
    Health,
    ReadyInfo,
    SearchHit,
    SearchResponse,
    request_types,
)
from service.schemas import rerank_depth as requested_depth

log = logging.getLogger("service")

S = TypeVar("S", bound=msgspec.Struct)

# msgspec error path -> the config key that sets the limit it broke
LIMIT_KEYS = {
    "$.query": "service.max_query_chars",
    "$.queries": "service.max_batch",
    "$.queries[": "service.max_query_chars",
    "$.k": "service.max_k",
    "$.rerank_depth": "service.max_rerank_depth",
    "$.rerank_top_k": "service.max_rerank_depth",
    "$.texts": "service.max_encode_texts",
    "$.texts[": "service.max_encode_chars",
}
_PATH = re.compile(r" - at `(?P<path>\$[^`]*)`$")


def explain(message: str) -> str:
    """msgspec's message, with the config key of a broken limit and a plain word for blank text."""
    m = _PATH.search(message)
    if not m:
        return message
    path = m["path"]
    if "matching regex" in message or "`str` of length >= 1" in message:
        return f"{path} is empty or only whitespace: send some text"
    if "<=" in message:
        key = LIMIT_KEYS.get(path) or LIMIT_KEYS.get(path.split("[")[0] + "[" if "[" in path else path)
        if key:
            return f"{message} ({key})"
    return message


def _integral(value: Any) -> Any:
    """Floats with no fractional part (5.0, 1e2) as ints, through dicts and lists."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


class StrictJSON(MsgspecDTO[S], Generic[S]):
    """Decode the body straight into the Struct with msgspec, strictly, limits included.

    Litestar's default conversion is lax (it turns `"k": "5"` into 5); a search API should refuse
    wrong types instead. Decoding bytes -> Struct in one step is also the cheapest path.
    """

    def decode_bytes(self, value: bytes) -> Any:
        try:
            return msgspec.json.decode(value, type=self.model_type, strict=True)
        except msgspec.ValidationError as exc:
            if "got `float`" in str(exc):  # JSON Schema counts 5.0 as an integer, so the API does too
                try:
                    return msgspec.convert(_integral(msgspec.json.decode(value)), type=self.model_type, strict=True)
                except msgspec.ValidationError as again:
                    exc = again
            raise ValidationException(detail=f"invalid request body: {explain(str(exc))}") from exc
        except msgspec.DecodeError as exc:
            raise ValidationException(detail=f"request body is not valid JSON: {exc}") from exc

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        """Document the Struct itself rather than a DTO-generated transfer model."""
        annotation = FieldDefinition.from_annotation(cls.model_type, kwarg_definition=field_definition.kwarg_definition)
        result: Reference | Schema = schema_creator.for_field_definition(annotation)
        return result


def _bad(detail: str) -> ValidationException:
    return ValidationException(detail=detail)


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
        raise _bad(str(exc)) from exc
    return min(50, engine.settings.service.max_rerank_depth) if depth is None else depth


def check_rerank(engine: Engine, n_queries: int, k: int, depth: int) -> None:
    """Rerank needs a teacher, and queries x candidates stays under the pair cap of the rerank mode."""
    if not engine.rerank_available:
        raise _bad(
            "rerank=true needs the teacher, which this server did not load: start it with "
            "service.rerank=true (and without --no-rerank), or send rerank=false"
        )
    cap, key = engine.rerank_pair_cap()
    pairs = n_queries * max(k, depth)
    if pairs > cap:
        raise _bad(
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


def _engine(state: State) -> Engine:
    engine: Engine | None = state.get("engine")
    if engine is None:
        raise ServiceUnavailableException(detail="the search engine is not loaded yet")
    return engine


def _runner(state: State) -> Runner:
    runner: Runner = state["runner"]
    return runner


def _error_response(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response({"status_code": status_code, "detail": detail}, status_code=status_code, headers=headers)


def _record_unrouted(request: Request[Any, Any, Any], status: int) -> None:
    """404/405 come from routing, before the middleware: count them here."""
    if "request_id" not in (request.scope.get("state") or {}):
        metrics: Metrics | None = request.app.state.get("metrics")
        if metrics is not None:
            metrics.observe(request.method, "<unmatched>", status, 0.0)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Flatten Litestar's errors into `{"status_code", "detail"}` with a detail that names the field."""
    detail = exc.detail
    headers = {**(exc.headers or {}), **handler_error_headers(request.scope)}
    if exc.status_code == 413:
        limit = request.app.state.get("max_body_bytes")
        detail = f"request body is too large: the limit is {limit} bytes (service.max_body_bytes)"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}: use {headers.get('allow', '?')}"
    elif isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        parts = []
        for item in exc.extra:
            if not isinstance(item, dict):
                continue
            key, message = item.get("key"), item.get("message")
            if key == "data" and message == "'data'":
                parts.append('request body is empty: send a JSON object such as {"query": "..."}')
            else:
                parts.append(f"{key}: {message}")
        detail = "; ".join(parts) or detail
    if exc.status_code in (404, 405):
        _record_unrouted(request, exc.status_code)
    return _error_response(exc.status_code, detail, headers)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    headers = handler_error_headers(request.scope)
    token = REQUEST_ID.set(headers["x-request-id"])
    try:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    finally:
        REQUEST_ID.reset(token)
    return _error_response(500, f"internal server error ({type(exc).__name__})", headers)


def _responses(*codes: int) -> dict[int, ResponseSpec]:
    what = {
        400: "bad input: the detail names the field and the limit",
        401: "missing, unknown or revoked API key (WWW-Authenticate says how to send one)",
        413: "request body over service.max_body_bytes",
        429: "rate limit exceeded (Retry-After says when to retry)",
        503: "all rerank slots busy, or the engine is still loading (Retry-After)",
    }
    return {c: ResponseSpec(ErrorResponse, description=what[c], generate_examples=False) for c in codes}


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


def build_handlers(cfg: ServiceConfig, auth: bool) -> list[Any]:
    """Route handlers whose request types carry this config's limits."""
    types = request_types(cfg)
    SearchRequest = types.search  # noqa: N806 - a class
    BatchRequest = types.batch  # noqa: N806
    EncodeRequest = types.encode  # noqa: N806
    security: Any = [{"bearer": []}, {"apiKey": []}] if auth else None
    guarded = (401, 429) if auth else ((429,) if cfg.rate_limit_per_minute else ())
    body_errors = _responses(400, 413, 503, *guarded)

    @post(
        "/search", status_code=200, dto=StrictJSON[SearchRequest], return_dto=None,  # type: ignore[valid-type]
        responses=body_errors, security=security, summary="Search",
    )  # fmt: skip
    async def search(
        data: JSONBody[SearchRequest],  # type: ignore[valid-type]
        engine: NamedDependency[Engine],
        runner: NamedDependency[Runner],
    ) -> SearchResponse:
        """Top-k passages for one query; with `rerank`, the teacher re-scores the top `rerank_depth`."""
        return await run_search(data, engine, runner)

    @post(
        "/search/batch", status_code=200, dto=StrictJSON[BatchRequest], return_dto=None,  # type: ignore[valid-type]
        responses=body_errors, security=security, summary="Search several queries",
    )  # fmt: skip
    async def search_batch(
        data: JSONBody[BatchRequest],  # type: ignore[valid-type]
        engine: NamedDependency[Engine],
        runner: NamedDependency[Runner],
    ) -> BatchResponse:
        """Several queries: one student forward pass and one index search for all of them."""
        return await run_batch(data, engine, runner)

    @post(
        "/encode", status_code=200, dto=StrictJSON[EncodeRequest], return_dto=None,  # type: ignore[valid-type]
        responses=body_errors, security=security, summary="Embed texts with the student",
    )  # fmt: skip
    async def encode(
        data: JSONBody[EncodeRequest],  # type: ignore[valid-type]
        engine: NamedDependency[Engine],
        runner: NamedDependency[Runner],
    ) -> EncodeResponse:
        """The student's embeddings of the texts (as passages, no query prefix), normalised by default."""
        return await run_encode(data, engine, runner)

    @get("/health", sync_to_thread=False, summary="Liveness")
    def health() -> Health:
        """Liveness: the process answers. Open without a key. Says nothing about the models (see /ready)."""
        return Health()

    @get("/ready", sync_to_thread=False, responses=_responses(503, *guarded), security=security, summary="Readiness")
    def ready(request: Request[Any, Any, Any], engine: NamedDependency[Engine]) -> ReadyInfo:
        """Readiness and provenance: models (and registry version), corpus size, index settings, commit."""
        info: ReadyInfo = request.app.state["ready"]
        return info

    @get(
        "/metrics", sync_to_thread=False, media_type=MediaType.TEXT, responses=_responses(*guarded),
        security=security, summary="Prometheus metrics",
    )  # fmt: skip
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text format: requests and latency per route, rerank slots in use, refusals."""
        body = request.app.state["metrics"].render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @get("/", sync_to_thread=False, media_type=MediaType.HTML, include_in_schema=False)
    def page() -> Response[str]:
        """The search page: student top-k beside the teacher-reranked top-k."""
        return Response(PAGE, media_type=MediaType.HTML)

    return [search, search_batch, encode, health, ready, metrics, page]


def _tighten_schema(app: Litestar, cfg: ServiceConfig) -> None:
    """What the Struct-to-schema step leaves out: no unknown fields, never both depth names, and the
    constraints on list items (Litestar drops `Meta` inside `list[...]`; msgspec still enforces them)."""
    schemas = app.openapi_schema.components.schemas or {}
    for name in ("SearchRequest", "BatchRequest", "EncodeRequest"):
        schema = schemas.get(name)
        if schema is None:
            continue
        schema.additional_properties = False
        if name != "EncodeRequest":
            schema.schema_not = Schema(required=["rerank_depth", "rerank_top_k"])
        props = schema.properties or {}
        items = {
            "queries": Schema(type=OpenAPIType.STRING, min_length=1, max_length=cfg.max_query_chars, pattern=NOT_BLANK),
            "texts": Schema(type=OpenAPIType.STRING, min_length=1, max_length=cfg.max_encode_chars),
        }
        for field, item in items.items():
            target = props.get(field)
            if isinstance(target, Schema):
                target.items = item


def create_app(settings: Settings, engine: Engine | None = None, log_access: bool = False) -> Litestar:
    """Build the app. Pass a preloaded `engine` (the CLI does, after validating) or let startup load it.

    A bad `service.*` value or an unreadable key file raises ConfigError here, naming the key or file.
    """
    cfg = settings.service
    check_service_config(cfg)
    auth = cfg.auth == "api_key"
    keys = KeyStore(Path(cfg.api_keys_file)) if auth else None
    metrics = Metrics()
    buckets = TokenBuckets(cfg.rate_limit_per_minute, cfg.rate_limit_burst) if cfg.rate_limit_per_minute else None
    gate = Gate(metrics, keys, buckets, log_access)

    async def startup(app: Litestar) -> None:
        loaded = engine
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(load_engine, settings)
        await anyio.to_thread.run_sync(loaded.warm_up)
        app.state.engine = loaded
        app.state.runner = Runner(cfg, metrics)
        app.state.ready = loaded.ready_for(cfg)
        _tighten_schema(app, cfg)
        log.info(
            "serving %d passages (student %s from %s, rerank %s, auth %s, rate limit %s/min)",
            loaded.corpus_size,
            loaded.student_name,
            "the registry" if loaded.registry else "the DVC folder",
            loaded.rerank_mode or "off",
            cfg.auth,
            cfg.rate_limit_per_minute or "off",
        )

    async def shutdown(app: Litestar) -> None:
        runner = getattr(app.state, "runner", None)
        if runner is not None:
            runner.rerank_pool.shutdown(wait=False, cancel_futures=True)

    components = None
    if auth:
        components = Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer <key>"),
                "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
            }
        )
    return Litestar(
        route_handlers=build_handlers(cfg, auth),
        on_startup=[startup],
        on_shutdown=[shutdown],
        dependencies={
            "engine": Provide(_engine, sync_to_thread=False),
            "runner": Provide(_runner, sync_to_thread=False),
        },
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        middleware=[gate_middleware(gate)()],
        request_max_body_size=cfg.max_body_bytes,
        state=State({"max_body_bytes": cfg.max_body_bytes, "metrics": metrics}),
        openapi_config=OpenAPIConfig(
            title="kd-search", version="0.2.0", path="/schema", components=components or Components()
        ),
        signature_types=[Engine, Runner],
    )

