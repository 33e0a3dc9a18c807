"""The Litestar app: `create_app(settings)` wires the loaded `Engine` into the HTTP handlers.

The engine (student, FAISS index, id map, passage store, optional teacher) is loaded once, at
startup, and reaches handlers through `Provide`. Search handlers run in a worker thread
(`sync_to_thread=True`) because encoding, FAISS and the teacher block. Every bad request gets a
4xx JSON `{"status_code", "detail"}` whose detail names the field and the limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, TypeVar

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException, ServiceUnavailableException, ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Reference, Schema
from litestar.params import JSONBody
from litestar.typing import FieldDefinition

from kd.config import ServiceConfig
from service.engine import Engine, Settings, load_engine
from service.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    Health,
    ReadyInfo,
    SearchHit,
    SearchRequest,
    SearchResponse,
)

log = logging.getLogger("service")

S = TypeVar("S", bound=msgspec.Struct)


class StrictJSON(MsgspecDTO[S], Generic[S]):
    """Decode the body straight into the Struct with msgspec, strictly.

    Litestar's default conversion is lax (it turns `"k": "5"` into 5); a search API should refuse
    wrong types instead. Decoding bytes -> Struct in one step is also the cheapest path.
    """

    def decode_bytes(self, value: bytes) -> Any:
        try:
            return msgspec.json.decode(value, type=self.model_type, strict=True)
        except msgspec.ValidationError as exc:
            raise ValidationException(detail=f"invalid request body: {exc}") from exc
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


def check_request(
    cfg: ServiceConfig, queries: list[str], k: int, rerank: bool, rerank_depth: int, rerank_available: bool, field: str
) -> None:
    """Value limits from `service.*`; each message names the field, the limit and its config key."""
    for i, q in enumerate(queries):
        name = field if field == "query" else f"{field}[{i}]"
        if not q.strip():
            raise _bad(f"{name} is empty or only whitespace: send some text to search for")
        if len(q) > cfg.max_query_chars:
            raise _bad(
                f"{name} is {len(q)} characters long; the limit is {cfg.max_query_chars} (service.max_query_chars)"
            )
    if not 1 <= k <= cfg.max_k:
        raise _bad(f"k={k} is out of range: it must be between 1 and {cfg.max_k} (service.max_k)")
    if not 1 <= rerank_depth <= cfg.max_rerank_depth:
        raise _bad(
            f"rerank_depth={rerank_depth} is out of range: it must be between 1 and "
            f"{cfg.max_rerank_depth} (service.max_rerank_depth)"
        )
    if rerank:
        if not rerank_available:
            raise _bad(
                "rerank=true needs the teacher, which this server did not load: start it with "
                "service.rerank=true (and without --no-rerank), or send rerank=false"
            )
        if rerank_depth < k:
            raise _bad(f"rerank_depth={rerank_depth} is less than k={k}: with rerank=true it must be >= k")


def _hits(engine: Engine, ranked: list[tuple[int, float]]) -> list[SearchHit]:
    passages = engine.passages
    out = []
    for rank, (row, score) in enumerate(ranked, 1):
        p = passages[row]
        out.append(SearchHit(doc_id=p["_id"], title=p["title"], text=p["text"], score=score, rank=rank))
    return out


@post("/search", status_code=200, sync_to_thread=True, dto=StrictJSON[SearchRequest], return_dto=None)
def search(data: JSONBody[SearchRequest], engine: NamedDependency[Engine]) -> SearchResponse:
    """Top-k passages for one query; with `rerank`, the teacher re-scores the top `rerank_depth`."""
    start = time.perf_counter()
    check_request(
        engine.settings.service, [data.query], data.k, data.rerank, data.rerank_depth, engine.rerank_available, "query"
    )
    (ranked,) = engine.search([data.query], data.k, data.rerank, data.rerank_depth)
    results = _hits(engine, ranked)
    return SearchResponse(
        query=data.query,
        results=results,
        total_results=len(results),
        reranked=data.rerank,
        latency_ms=(time.perf_counter() - start) * 1000,
    )


@post("/search/batch", status_code=200, sync_to_thread=True, dto=StrictJSON[BatchRequest], return_dto=None)
def search_batch(data: JSONBody[BatchRequest], engine: NamedDependency[Engine]) -> BatchResponse:
    """Several queries: one student forward pass and one index search for all of them."""
    start = time.perf_counter()
    cfg = engine.settings.service
    if not data.queries:
        raise _bad("queries is empty: send at least one query")
    if len(data.queries) > cfg.max_batch:
        raise _bad(f"queries holds {len(data.queries)} queries; the limit is {cfg.max_batch} (service.max_batch)")
    check_request(cfg, data.queries, data.k, data.rerank, data.rerank_depth, engine.rerank_available, "queries")
    ranked = engine.search(data.queries, data.k, data.rerank, data.rerank_depth)
    items = []
    for q, r in zip(data.queries, ranked, strict=True):
        hits = _hits(engine, r)
        items.append(BatchItem(query=q, results=hits, total_results=len(hits)))
    return BatchResponse(
        results=items,
        total_queries=len(items),
        reranked=data.rerank,
        latency_ms=(time.perf_counter() - start) * 1000,
    )


@get("/health", sync_to_thread=False)
def health() -> Health:
    """Liveness: the process answers. Says nothing about the models (see /ready)."""
    return Health()


@get("/ready", sync_to_thread=False)
def ready(engine: NamedDependency[Engine]) -> ReadyInfo:
    """Readiness and provenance: models, corpus size, index settings, git commit / DVC experiment."""
    return engine.ready_info


def _engine(state: State) -> Engine:
    engine: Engine | None = state.get("engine")
    if engine is None:
        raise ServiceUnavailableException(detail="the search engine is not loaded yet")
    return engine


def _error_response(status_code: int, detail: str) -> Response[dict[str, Any]]:
    return Response({"status_code": status_code, "detail": detail}, status_code=status_code)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Flatten Litestar's errors into `{"status_code", "detail"}` with a detail that names the field."""
    detail = exc.detail
    if exc.status_code == 413:
        limit = request.app.state.get("max_body_bytes")
        detail = f"request body is too large: the limit is {limit} bytes (service.max_body_bytes)"
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
    return _error_response(exc.status_code, detail)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(500, f"internal server error ({type(exc).__name__})")


def create_app(settings: Settings, engine: Engine | None = None) -> Litestar:
    """Build the app. Pass a preloaded `engine` (the CLI does, after validating) or let startup load it."""

    async def startup(app: Litestar) -> None:
        loaded = engine
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(load_engine, settings)
        await anyio.to_thread.run_sync(loaded.warm_up)
        app.state.engine = loaded
        log.info(
            "serving %d passages (student %s, rerank %s)",
            loaded.corpus_size,
            settings.student_dir,
            "on" if loaded.rerank_available else "off",
        )

    return Litestar(
        route_handlers=[search, search_batch, health, ready],
        on_startup=[startup],
        dependencies={"engine": Provide(_engine, sync_to_thread=False)},
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        request_max_body_size=settings.service.max_body_bytes,
        state=State({"max_body_bytes": settings.service.max_body_bytes}),
        openapi_config=OpenAPIConfig(title="kd-search", version="0.1.0", path="/schema"),
        signature_types=[Engine],
    )
