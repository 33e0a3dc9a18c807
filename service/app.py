"""The Litestar app: `create_app(settings)` wires the loaded `Engine` into the HTTP handlers.

The request types come from the config (`service.schemas.request_types`), so handlers are built per
app inside `create_app` (no `from __future__ import annotations` here: Litestar reads the real types).

What each route runs is `service.handlers` (threads: plain searches and /encode on a limiter of
`service.search_workers` threads; reranks on `service.max_concurrent_reranks` threads of their own, at a
lower priority, `service.rerank_nice`, refused with 503 + Retry-After when every slot is busy); how a bad
request is refused is `service.errors` (a 4xx JSON `{"status_code", "detail"}` naming the field and the
limit); keys, rate limits, request ids and metrics are `service.ops`'s middleware.
"""

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.params import JSONBody

from kd.config import ServiceConfig
from service.engine import Engine
from service.errors import StrictJSON, error_responses, http_error, internal_error
from service.handlers import Runner, engine_of, run_batch, run_encode, run_search, runner_of
from service.keys import KeyStore
from service.ops import Gate, Metrics, TokenBuckets, gate_middleware
from service.page import PAGE
from service.schemas import (
    NOT_BLANK,
    BatchResponse,
    EncodeResponse,
    Health,
    ReadyInfo,
    SearchResponse,
    request_types,
)
from service.settings import Settings, check_service_config
from service.startup import load_engine

log = logging.getLogger("service")


def build_handlers(cfg: ServiceConfig, auth: bool) -> list[Any]:
    """Route handlers whose request types carry this config's limits."""
    types = request_types(cfg)
    SearchRequest = types.search  # noqa: N806 - a class
    BatchRequest = types.batch  # noqa: N806
    EncodeRequest = types.encode  # noqa: N806
    security: Any = [{"bearer": []}, {"apiKey": []}] if auth else None
    guarded = (401, 429) if auth else ((429,) if cfg.rate_limit_per_minute else ())
    body_errors = error_responses(400, 413, 503, *guarded)

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

    @get("/ready", sync_to_thread=False, responses=error_responses(503, *guarded), security=security, summary="Readiness")
    def ready(request: Request[Any, Any, Any], engine: NamedDependency[Engine]) -> ReadyInfo:
        """Readiness and provenance: models (and registry version), corpus size, index settings, commit."""
        info: ReadyInfo = request.app.state["ready"]
        return info

    @get(
        "/metrics", sync_to_thread=False, media_type=MediaType.TEXT, responses=error_responses(*guarded),
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
            "engine": Provide(engine_of, sync_to_thread=False),
            "runner": Provide(runner_of, sync_to_thread=False),
        },
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        middleware=[gate_middleware(gate)()],
        request_max_body_size=cfg.max_body_bytes,
        state=State({"max_body_bytes": cfg.max_body_bytes, "metrics": metrics}),
        openapi_config=OpenAPIConfig(
            title="kd-search", version="0.2.0", path="/schema", components=components or Components()
        ),
        signature_types=[Engine, Runner],
    )

