"""Wire types of the search API, as msgspec Structs.

msgspec decodes and encodes these without an intermediate dict, which keeps the per-request cost low.
Only *types* are checked here (strictly: "5" is not an int); the value limits depend on the service
config (`service.max_k`, ...) and are checked in `service.app`, so their messages can name the key.
"""

from __future__ import annotations

from typing import Any

import msgspec


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One query. `rerank` re-scores the top `rerank_depth` student hits with the teacher."""

    query: str
    k: int = 10
    rerank: bool = False
    rerank_depth: int = 50


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Several queries, encoded by the student in one forward pass."""

    queries: list[str]
    k: int = 10
    rerank: bool = False
    rerank_depth: int = 50


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


class Health(msgspec.Struct):
    status: str = "ok"


class StudentInfo(msgspec.Struct):
    name: str
    path: str
    max_seq_length: int
    embedding_dim: int
    query_prefix: str


class TeacherInfo(msgspec.Struct):
    name: str
    model: str
    kind: str


class Limits(msgspec.Struct):
    """The request limits in force, so a client can size its requests without reading the config."""

    max_query_chars: int
    max_k: int
    max_rerank_depth: int
    max_batch: int
    max_body_bytes: int


class ReadyInfo(msgspec.Struct):
    """What is being served: models, corpus, index settings and the provenance in the index's meta.json."""

    status: str
    student: StudentInfo
    teacher: TeacherInfo | None
    rerank_available: bool
    corpus_size: int
    index: dict[str, Any]
    git_commit: str | None
    dvc_experiment: str | None
    limits: Limits
    meta: dict[str, Any]


class ErrorResponse(msgspec.Struct):
    status_code: int
    detail: str
