"""Wire types of the search API, as msgspec Structs.

The request types are built per config (`request_types(cfg)`) so that every limit the server
enforces (`service.max_k`, `service.max_query_chars`, ...) is a msgspec `Meta` constraint: msgspec
enforces it while decoding, and the same constraint is what the OpenAPI schema publishes. A client
that follows the schema is never refused for a limit it could not see. Types are checked strictly
("5" is not an int). The response types are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from kd.config import ServiceConfig

NOT_BLANK = r"\S"  # JSON Schema / msgspec `pattern` is a search: at least one non-whitespace character
DEFAULT_K = 10
DEFAULT_RERANK_DEPTH = 50


@dataclass(frozen=True)
class RequestTypes:
    """The request Structs for one config; their OpenAPI component names are the class names."""

    search: type[msgspec.Struct]
    batch: type[msgspec.Struct]
    encode: type[msgspec.Struct]


def request_types(cfg: ServiceConfig) -> RequestTypes:
    """Request Structs whose constraints are the config's limits (so the schema states them)."""
    query = Annotated[
        str,
        Meta(
            min_length=1,
            max_length=cfg.max_query_chars,
            pattern=NOT_BLANK,
            description=f"search text: 1 to {cfg.max_query_chars} characters, not only whitespace",
        ),
    ]
    k = Annotated[int, Meta(ge=1, le=cfg.max_k, description=f"results to return, 1 to {cfg.max_k}")]
    depth_doc = (
        f"with rerank: how many student hits the teacher re-scores, 1 to {cfg.max_rerank_depth} (default "
        f"{min(DEFAULT_RERANK_DEPTH, cfg.max_rerank_depth)}; at least k are always re-scored). Also accepted as "
        "rerank_top_k; send one of the two, not both"
    )
    depth = Annotated[int, Meta(ge=1, le=cfg.max_rerank_depth, description=depth_doc)]
    alias = Annotated[
        int, Meta(ge=1, le=cfg.max_rerank_depth, description="another name for rerank_depth (clients of the seed API)")
    ]
    rerank = Annotated[bool, Meta(description="re-score the student's top rerank_depth with the teacher")]
    default_k = min(DEFAULT_K, cfg.max_k)
    common: list[tuple[str, Any, Any]] = [
        ("k", k, default_k),
        ("rerank", rerank, False),
        ("rerank_depth", depth | UnsetType, UNSET),
        ("rerank_top_k", alias | UnsetType, UNSET),
    ]
    search = msgspec.defstruct(
        "SearchRequest",
        [("query", query), *common],
        forbid_unknown_fields=True,
        module=__name__,
        namespace={"__doc__": "One query. `rerank` re-scores the top `rerank_depth` student hits with the teacher."},
    )
    queries = Annotated[
        list[query],  # type: ignore[valid-type]
        Meta(min_length=1, max_length=cfg.max_batch, description=f"1 to {cfg.max_batch} queries"),
    ]
    batch = msgspec.defstruct(
        "BatchRequest",
        [("queries", queries), *common],
        forbid_unknown_fields=True,
        module=__name__,
        namespace={
            "__doc__": (
                "Several queries, encoded by the student in one forward pass. With rerank, queries x rerank_depth "
                f"is capped at {cfg.max_rerank_pairs} (service.max_rerank_pairs)."
            )
        },
    )
    text = Annotated[str, Meta(min_length=1, max_length=cfg.max_encode_chars)]
    texts = Annotated[
        list[text],  # type: ignore[valid-type]
        Meta(
            min_length=1,
            max_length=cfg.max_encode_texts,
            description=f"1 to {cfg.max_encode_texts} texts of 1 to {cfg.max_encode_chars} characters",
        ),
    ]
    encode = msgspec.defstruct(
        "EncodeRequest",
        [("texts", texts), ("normalize", Annotated[bool, Meta(description="L2-normalise each vector")], True)],
        forbid_unknown_fields=True,
        module=__name__,
        namespace={"__doc__": "Texts to embed with the student (as passages: no query prefix)."},
    )
    return RequestTypes(search=search, batch=batch, encode=encode)


def rerank_depth(data: Any) -> int | None:
    """`rerank_depth` or its alias `rerank_top_k`; None when neither was sent. Both -> ValueError naming them."""
    depth, alias = data.rerank_depth, data.rerank_top_k
    if depth is not UNSET and alias is not UNSET:
        raise ValueError(
            "rerank_depth and rerank_top_k are the same setting (rerank_top_k is an alias): send one of them, not both"
        )
    if depth is not UNSET:
        return int(depth)
    if alias is not UNSET:
        return int(alias)
    return None


class SearchHit(msgspec.Struct):
    doc_id: str
    title: str
    text: str
    score: float
    rank: int


class SearchResponse(msgspec.Struct):
    """`score` is the student's cosine, or the teacher's score when `reranked` is true."""

    query: str
    results: list[SearchHit]
    total_results: int
    reranked: bool
    latency_ms: float


class BatchItem(msgspec.Struct):
    query: str
    results: list[SearchHit]
    total_results: int


class BatchResponse(msgspec.Struct):
    """`latency_ms` covers the whole batch (the queries share one encode and one index search)."""

    results: list[BatchItem]
    total_queries: int
    reranked: bool
    latency_ms: float


class EncodeResponse(msgspec.Struct):
    """One vector per text, in order; `model` names the student (and its registry version, if any)."""

    embeddings: list[list[float]]
    dim: int
    normalized: bool
    model: str
    latency_ms: float


class Health(msgspec.Struct):
    status: str = "ok"


class RegistryInfo(msgspec.Struct):
    """Where a registry-loaded student came from: `models:/<name>@<alias>` resolved to a version."""

    uri: str
    name: str
    version: str
    alias: str | None
    run_id: str | None


class StudentInfo(msgspec.Struct):
    name: str
    source: str  # "dvc" (the pipeline's artifacts/student) or "registry"
    registry: RegistryInfo | None
    max_seq_length: int
    embedding_dim: int
    query_prefix: str


class TeacherInfo(msgspec.Struct):
    name: str
    model: str
    kind: str
    rerank_mode: str  # "embeddings" (precomputed passage embeddings) or "pairs" (the teacher scores each pair)


class Limits(msgspec.Struct):
    """The request limits in force, so a client can size its requests without reading the config."""

    max_query_chars: int
    max_k: int
    max_rerank_depth: int
    max_batch: int
    max_body_bytes: int
    max_rerank_pairs: int
    max_scored_pairs: int
    max_concurrent_reranks: int
    max_encode_texts: int
    max_encode_chars: int
    rate_limit_per_minute: int


class ReadyInfo(msgspec.Struct):
    """What is being served: models, corpus, index settings and provenance; no filesystem paths."""

    status: str
    student: StudentInfo
    teacher: TeacherInfo | None
    rerank_available: bool
    corpus_size: int
    index: dict[str, Any]
    git_commit: str | None
    dvc_experiment: str | None
    auth: str
    limits: Limits
    # symmetric: the student encoded the corpus; asymmetric: the index is the teacher's passage matrix
    # (`index.passages=teacher`) and the student encodes only the queries
    mode: str = "symmetric"


class ErrorResponse(msgspec.Struct):
    status_code: int
    detail: str
