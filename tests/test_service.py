"""The search service over real HTTP (Litestar TestClient), on the smoke pipeline's artifacts.

`smoke_repo` (tests/pipeline_fixtures.py) ran `dvc exp run -S +experiment=smoke`: its
`artifacts/student` and `artifacts/index` are what the service loads; its teacher is MiniLM at
64 tokens, whose scores differ from the distilled student's. Its passage embeddings (stage
`teacher_corpus`) make the fast rerank path; a second app without them covers pair scoring.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient

from kd.config import Params
from kd.data.io import passage_text
from kd.errors import ArtifactError
from kd.models.loading import encode
from kd.models.teacher import BiEncoderTeacher
from kd.params import load_params
from kd.retrieval import index as kd_index
from kd.retrieval import search as kd_search
from service.app import create_app
from service.engine import Engine
from service.ops import RequestIdFilter
from service.settings import Settings
from service.startup import load_engine, validate_artifacts
from tests.service_fixtures import REPO, judged_test_queries, teacher_corpus_dir

pytestmark = pytest.mark.slow  # every test here serves the smoke pipeline's artifacts

QUERY = "Why is it called Python?"


@pytest.fixture(scope="module")
def artifacts(smoke_repo: Path) -> tuple[Path, Path, Path, Params]:
    params = load_params(smoke_repo / "params.yaml")
    params = replace(params, service=replace(params.service, rerank=True))
    return smoke_repo, smoke_repo / "artifacts/student", smoke_repo / "artifacts/index", params


@pytest.fixture(scope="module")
def tc_dir(artifacts: tuple[Path, Path, Path, Params], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _, _, params = artifacts
    return teacher_corpus_dir(root, params, tmp_path_factory.mktemp("teacher_corpus"))


@pytest.fixture(scope="module")
def client(artifacts: tuple[Path, Path, Path, Params], tc_dir: Path) -> Iterator[TestClient[Any]]:
    """Engine loaded by the app's own startup hook, teacher and its passage embeddings included."""
    _, student_dir, index_dir, params = artifacts
    with TestClient(create_app(Settings(student_dir, index_dir, params, teacher_corpus_dir=tc_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def engine(client: TestClient[Any]) -> Engine:
    loaded: Engine = client.app.state.engine
    return loaded


@pytest.fixture(scope="module")
def norerank_client(artifacts: tuple[Path, Path, Path, Params], engine: Engine) -> Iterator[TestClient[Any]]:
    """No teacher; the engine is handed in preloaded, as `python -m service` does."""
    _, student_dir, index_dir, params = artifacts
    settings = Settings(student_dir, index_dir, params, rerank=False)
    preloaded = Engine(settings, engine.student, kd_index.load(index_dir), None)
    with TestClient(create_app(settings, engine=preloaded)) as c:
        yield c


@pytest.fixture(scope="module")
def pairs_client(
    artifacts: tuple[Path, Path, Path, Params], engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient[Any]]:
    """The teacher without precomputed passage embeddings: reranking scores pairs, capped lower."""
    _, student_dir, index_dir, params = artifacts
    params = replace(params, service=replace(params.service, max_scored_pairs=40))
    settings = Settings(student_dir, index_dir, params, teacher_corpus_dir=tmp_path_factory.mktemp("none"))
    preloaded = Engine(settings, engine.student, kd_index.load(index_dir), engine.teacher, None)
    with TestClient(create_app(settings, engine=preloaded)) as c:
        yield c


def post(client: TestClient[Any], path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


# ---------------------------------------------------------------- happy paths


def test_search_response_shape(client: TestClient[Any]) -> None:
    r = post(client, "/search", {"query": QUERY, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"query", "results", "total_results", "reranked", "latency_ms"}
    assert body["query"] == QUERY and body["reranked"] is False
    assert body["total_results"] == len(body["results"]) == 5
    assert body["latency_ms"] > 0
    for hit in body["results"]:
        assert set(hit) == {"doc_id", "title", "text", "score", "rank"}
        assert hit["doc_id"] and hit["text"]


@pytest.mark.parametrize("k", [1, 7, 10, 100])
def test_results_ordered_and_k_respected(client: TestClient[Any], engine: Engine, k: int) -> None:
    body = post(client, "/search", {"query": "How do I read a file?", "k": k}).json()
    hits = body["results"]
    assert body["total_results"] == len(hits)
    if k <= engine.corpus_size:
        assert len(hits) == k
    else:  # more than the corpus: HNSW may leave a node or two unreachable, never returns extra
        assert 0.9 * engine.corpus_size <= len(hits) <= engine.corpus_size
    assert len({h["doc_id"] for h in hits}) == len(hits)
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_results_are_the_index_results(client: TestClient[Any], engine: Engine) -> None:
    """Same ids and cosines as encoding with kd.models.loading.encode and searching with kd.retrieval.search.search."""
    hits = post(client, "/search", {"query": QUERY, "k": 10}).json()["results"]
    emb = encode(engine.student, [QUERY], engine.query_prefix)
    (expected,) = kd_search.search(engine.faiss, emb, engine.docids, 10)
    assert [h["doc_id"] for h in hits] == [d for d, _ in expected]
    assert [h["score"] for h in hits] == pytest.approx([s for _, s in expected], abs=1e-4)
    by_id = {p["_id"]: p for p in engine.passages}
    assert all(h["text"] == by_id[h["doc_id"]]["text"] for h in hits)


def test_judged_passage_in_top_10(client: TestClient[Any], artifacts: tuple[Path, Path, Path, Params]) -> None:
    judged = judged_test_queries(artifacts[0])
    assert judged
    found = {}
    for qid, (text, relevant) in judged.items():
        hits = post(client, "/search", {"query": text, "k": 10}).json()["results"]
        found[qid] = bool(relevant & {h["doc_id"] for h in hits})
    assert sum(found.values()) >= 0.7 * len(found), found  # the smoke corpus is small: most are found


def test_rerank_uses_the_teacher_embeddings(client: TestClient[Any], engine: Engine) -> None:
    """Fast path: the teacher encodes the query only; scores are dot products with its passage rows."""
    assert engine.rerank_mode == "embeddings"
    r = post(client, "/search", {"query": QUERY, "k": 5, "rerank": True, "rerank_depth": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reranked"] is True
    hits = body["results"]
    assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    by_id = {p["_id"]: p for p in engine.passages}
    teacher = engine.teacher
    assert isinstance(teacher, BiEncoderTeacher)
    q = teacher.encode_queries([QUERY])[0]
    expected = teacher.encode_passages([passage_text(by_id[h["doc_id"]]) for h in hits]) @ q
    assert [h["score"] for h in hits] == pytest.approx(expected.tolist(), abs=2e-3)  # rows are stored float16
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # the candidates are the student's top 20, and the teacher's scores are not the student's
    student = post(client, "/search", {"query": QUERY, "k": 20}).json()["results"]
    student_scores = {h["doc_id"]: h["score"] for h in student}
    assert {h["doc_id"] for h in hits} <= set(student_scores)
    assert not np.allclose([h["score"] for h in hits], [student_scores[h["doc_id"]] for h in hits], atol=1e-4)
    # the teacher's best of those 20 is what came back first
    all20 = teacher.encode_passages([passage_text(by_id[h["doc_id"]]) for h in student]) @ q
    assert hits[0]["doc_id"] == student[int(np.argmax(all20))]["doc_id"]


def test_rerank_pairs_mode_and_cap(pairs_client: TestClient[Any], engine: Engine) -> None:
    """No passage embeddings: the teacher scores each pair, and the lower pair cap applies."""
    r = post(pairs_client, "/search", {"query": QUERY, "k": 5, "rerank": True, "rerank_depth": 20})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    by_id = {p["_id"]: p for p in engine.passages}
    assert engine.teacher is not None
    teacher = engine.teacher.score([QUERY] * 5, [passage_text(by_id[h["doc_id"]]) for h in hits])
    assert [h["score"] for h in hits] == pytest.approx(teacher.tolist(), abs=1e-4)
    assert pairs_client.get("/ready").json()["teacher"]["rerank_mode"] == "pairs"
    body = {"queries": [QUERY, "What is a decorator?", "unicode"], "k": 5, "rerank": True, "rerank_depth": 20}
    assert_client_error(post(pairs_client, "/search/batch", body), 400, ("60 pairs", "40", "service.max_scored_pairs"))


def test_rerank_top_k_alias(client: TestClient[Any]) -> None:
    a = post(client, "/search", {"query": QUERY, "k": 5, "rerank": True, "rerank_depth": 20}).json()
    b = post(client, "/search", {"query": QUERY, "k": 5, "rerank": True, "rerank_top_k": 20}).json()
    assert [h["doc_id"] for h in a["results"]] == [h["doc_id"] for h in b["results"]]
    both = {"query": QUERY, "rerank": True, "rerank_depth": 20, "rerank_top_k": 20}
    assert_client_error(post(client, "/search", both), 400, ("rerank_depth", "rerank_top_k", "not both"))
    both_batch = {"queries": [QUERY], "rerank_depth": 5, "rerank_top_k": 5}
    assert_client_error(post(client, "/search/batch", both_batch), 400, ("rerank_top_k", "not both"))


def test_depth_below_k_reranks_k(client: TestClient[Any]) -> None:
    """A schema-valid request is accepted: rerank_depth < k re-scores the top k."""
    r = post(client, "/search", {"query": QUERY, "k": 8, "rerank": True, "rerank_depth": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 8 and r.json()["reranked"] is True


def test_busy_rerank_is_503_and_plain_search_does_not_wait(
    client: TestClient[Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rerank slot (service.max_concurrent_reranks=1): a second rerank gets 503 + Retry-After at once.
    The rerank runs on its own thread at service.rerank_nice; plain searches at normal priority."""
    import os
    import threading

    gate, entered = threading.Event(), threading.Event()
    real = engine.search
    nice: dict[bool, int] = {}

    def slow(queries: list[str], k: int, rerank: bool = False, rerank_depth: int = 0) -> Any:
        nice[rerank] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - os.getpriority(
            os.PRIO_PROCESS, threading.main_thread().native_id or 0
        )
        if rerank:
            entered.set()
            gate.wait(30)
        return real(queries, k, rerank, rerank_depth)

    monkeypatch.setattr(engine, "search", slow)
    body = {"query": QUERY, "k": 3, "rerank": True, "rerank_depth": 10}
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(post, client, "/search", body)
        assert entered.wait(30)
        t0 = time.perf_counter()
        busy = post(client, "/search", body)
        plain = post(client, "/search", {"query": QUERY, "k": 3})
        waited = time.perf_counter() - t0
        gate.set()
        assert first.result(60).status_code == 200
    assert_client_error(busy, 503, ("service.max_concurrent_reranks",))
    assert busy.headers["retry-after"] == "1"
    assert plain.status_code == 200 and waited < 10  # neither queued behind the held rerank
    assert nice == {True: engine.settings.service.rerank_nice, False: 0} and nice[True] == 10
    metrics = client.get("/metrics").text
    assert "kd_rerank_rejected_total 1.0" in metrics or "kd_rerank_rejected_total" in metrics


def test_encode(client: TestClient[Any], engine: Engine) -> None:
    texts = ["How do I read a file?", "Python is a programming language."]
    r = post(client, "/encode", {"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    emb = np.asarray(body["embeddings"], dtype=np.float32)
    assert emb.shape == (2, body["dim"]) and body["dim"] == engine.faiss.d and body["normalized"] is True
    assert np.linalg.norm(emb, axis=1) == pytest.approx([1.0, 1.0], abs=1e-4)
    expected = engine.student.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(emb, expected, atol=1e-4)
    raw = post(client, "/encode", {"texts": texts[:1], "normalize": False}).json()
    assert raw["normalized"] is False and len(raw["embeddings"]) == 1


BAD_ENCODE: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("no texts", {"texts": []}, 400, ("$.texts", "length")),
    ("too many", {"texts": ["x"] * 65}, 400, ("$.texts", "64", "service.max_encode_texts")),
    ("too long", {"texts": ["a" * 2001]}, 400, ("$.texts[0]", "2000", "service.max_encode_chars")),
    ("empty text", {"texts": ["x", ""]}, 400, ("$.texts[1]",)),
    ("not strings", {"texts": [1]}, 400, ("$.texts[0]", "str")),
    ("normalize not bool", {"texts": ["x"], "normalize": "yes"}, 400, ("$.normalize", "bool")),
    ("unknown field", {"texts": ["x"], "model": "y"}, 400, ("unknown field", "model")),
]


@pytest.mark.parametrize(("case", "body", "status", "needles"), BAD_ENCODE, ids=[c[0] for c in BAD_ENCODE])
def test_bad_encode_input(client: TestClient[Any], case: str, body: Any, status: int, needles: tuple[str, ...]) -> None:
    assert_client_error(post(client, "/encode", body), status, needles)


def test_batch_matches_single_queries(client: TestClient[Any]) -> None:
    queries = [QUERY, "How do I read a file?", "What is a decorator?"]
    r = post(client, "/search/batch", {"queries": queries, "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total_queries"] == 3 and body["reranked"] is False and body["latency_ms"] > 0
    for q, item in zip(queries, body["results"], strict=True):
        single = post(client, "/search", {"query": q, "k": 4}).json()["results"]
        assert item["query"] == q and item["total_results"] == 4
        assert [h["doc_id"] for h in item["results"]] == [h["doc_id"] for h in single]
        assert [h["score"] for h in item["results"]] == pytest.approx([h["score"] for h in single], abs=1e-4)


def test_batch_rerank(client: TestClient[Any]) -> None:
    body = post(
        client,
        "/search/batch",
        {"queries": [QUERY, "What is a decorator?"], "k": 3, "rerank": True, "rerank_depth": 10},
    ).json()
    assert body["reranked"] is True
    single = post(client, "/search", {"query": QUERY, "k": 3, "rerank": True, "rerank_depth": 10}).json()
    assert [h["doc_id"] for h in body["results"][0]["results"]] == [h["doc_id"] for h in single["results"]]


def test_concurrent_requests_agree(client: TestClient[Any]) -> None:
    queries = [QUERY, "How do I read a file?", "What is a decorator?", "Is Python good for beginners?", "unicode"]

    def one(i: int) -> tuple[str, int, list[tuple[str, float]]]:
        q = queries[i % len(queries)]
        r = post(client, "/search", {"query": q, "k": 5})
        hits = [(h["doc_id"], h["score"]) for h in r.json()["results"]] if r.status_code == 200 else []
        return q, r.status_code, hits

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, range(50)))
    assert [status for _, status, _ in answers] == [200] * 50
    by_query: dict[str, list[list[tuple[str, float]]]] = {}
    for q, _, hits in answers:
        by_query.setdefault(q, []).append(hits)
    for q, all_hits in by_query.items():
        assert all(h == all_hits[0] for h in all_hits), q


def test_health(client: TestClient[Any]) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_request_id_on_every_response(client: TestClient[Any]) -> None:
    ids = set()
    for r in (client.get("/health"), post(client, "/search", {"query": QUERY}), post(client, "/search", {"k": 1}),
              client.get("/nope"), client.get("/search")):  # fmt: skip
        assert len(r.headers["x-request-id"]) >= 16, (r.status_code, dict(r.headers))
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 5
    r = client.get("/health", headers={"X-Request-ID": "trace-abc.123"})
    assert r.headers["x-request-id"] == "trace-abc.123"
    r = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


def test_metrics(client: TestClient[Any]) -> None:
    post(client, "/search", {"query": QUERY, "k": 2})
    post(client, "/search", {"query": ""})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'kd_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert 'kd_http_requests_total{method="POST",route="/search",status="400"}' in text
    assert 'kd_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/search"}' in text
    assert "kd_rerank_in_flight 0.0" in text


def test_405_has_allow(client: TestClient[Any]) -> None:
    r = client.get("/search")
    assert_client_error(r, 405, ("GET", "POST"))
    assert "POST" in r.headers["allow"]
    r = client.delete("/encode")
    assert r.status_code == 405 and "POST" in r.headers["allow"]


def test_search_page(client: TestClient[Any]) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="search-form"' in r.text and "/search" in r.text


def test_ready(
    client: TestClient[Any], norerank_client: TestClient[Any], artifacts: tuple[Path, Path, Path, Params]
) -> None:
    body = client.get("/ready").json()
    assert body["status"] == "ready"
    root, _, index_dir, params = artifacts
    meta = json.loads((index_dir / "meta.json").read_text())
    assert body["corpus_size"] == meta["corpus_size"] == len((root / "data/corpus.jsonl").read_text().splitlines())
    assert body["student"]["embedding_dim"] == 384
    assert body["student"]["source"] == "dvc" and body["student"]["registry"] is None
    assert body["teacher"] == {
        "name": params.teacher.name, "model": "minilm", "kind": "bi_encoder", "rerank_mode": "embeddings"
    }  # fmt: skip
    assert body["rerank_available"] is True
    assert body["index"]["type"] == "hnsw" and body["index"]["M"] == params.index.M
    assert body["mode"] == "symmetric" and body["index"]["passages"] == "student"  # index.passages of the smoke run
    assert body["index"]["ef_search"] == params.index.ef_search
    assert body["git_commit"] == meta["git_commit"] and body["dvc_experiment"] == meta["dvc_experiment"]
    assert body["dvc_experiment"]  # the smoke run was a `dvc exp run`
    assert body["limits"]["max_k"] == 100 and body["limits"]["max_rerank_depth"] == 100
    assert body["auth"] == "none" and "meta" not in body
    assert str(root) not in json.dumps(body) and "/tmp" not in json.dumps(body)  # no filesystem paths
    off = norerank_client.get("/ready").json()
    assert off["teacher"] is None and off["rerank_available"] is False


def test_openapi_json(client: TestClient[Any]) -> None:
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert {"/search", "/search/batch", "/health", "/ready"} <= set(spec["paths"])
    assert "200" in spec["paths"]["/search"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert {"SearchRequest", "SearchResponse", "BatchRequest", "BatchResponse", "ReadyInfo"} <= set(schemas)
    search = schemas["SearchRequest"]
    assert set(search["properties"]) == {"query", "k", "rerank", "rerank_depth", "rerank_top_k"}
    # every enforced limit is in the schema
    assert search["properties"]["query"]["maxLength"] == 1000 and search["properties"]["query"]["minLength"] == 1
    assert search["properties"]["k"]["maximum"] == 100 and search["properties"]["k"]["minimum"] == 1
    assert search["properties"]["rerank_depth"]["maximum"] == 100
    assert search["additionalProperties"] is False
    assert search["not"] == {"required": ["rerank_depth", "rerank_top_k"]}
    batch = schemas["BatchRequest"]["properties"]["queries"]
    assert batch["maxItems"] == 64 and batch["minItems"] == 1 and batch["items"]["maxLength"] == 1000
    texts = schemas["EncodeRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 64 and texts["items"]["maxLength"] == 2000
    assert "/encode" in spec["paths"]
    for code in ("400", "413", "503"):
        assert code in spec["paths"]["/search"]["post"]["responses"]


# ---------------------------------------------------------------- bad input: 4xx, never 500

BAD_SEARCH: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("empty query", {"query": ""}, 400, ("query", "empty")),
    ("whitespace query", {"query": "  \t\n "}, 400, ("query", "whitespace")),
    ("long query", {"query": "a" * 1001}, 400, ("query", "1000", "service.max_query_chars")),
    ("k zero", {"query": "x", "k": 0}, 400, ("$.k", ">= 1")),
    ("k negative", {"query": "x", "k": -3}, 400, ("$.k", ">= 1")),
    ("k too big", {"query": "x", "k": 101}, 400, ("$.k", "<= 100", "service.max_k")),
    ("k huge", b'{"query": "x", "k": 100000000000000000000000}', 400, ("k",)),
    ("depth zero", {"query": "x", "rerank_depth": 0}, 400, ("$.rerank_depth", ">= 1")),
    ("depth too big", {"query": "x", "rerank_depth": 101}, 400, ("$.rerank_depth", "<= 100", "service.max_rerank_depth")),
    ("alias too big", {"query": "x", "rerank_top_k": 101}, 400, ("$.rerank_top_k", "service.max_rerank_depth")),
    ("both depths", {"query": "x", "rerank_depth": 5, "rerank_top_k": 5}, 400, ("rerank_top_k", "not both")),
    ("depth null", {"query": "x", "rerank_depth": None}, 400, ("$.rerank_depth", "int")),
    ("k as string", {"query": "x", "k": "5"}, 400, ("$.k", "int")),
    ("k as float", {"query": "x", "k": 5.5}, 400, ("$.k", "int")),
    ("k as bool", {"query": "x", "k": True}, 400, ("$.k", "int")),
    ("query as int", {"query": 123}, 400, ("$.query", "str")),
    ("query null", {"query": None}, 400, ("$.query", "str")),
    ("rerank as string", {"query": "x", "rerank": "yes"}, 400, ("$.rerank", "bool")),
    ("unknown field", {"query": "x", "top_k": 5}, 400, ("unknown field", "top_k")),
    ("missing query", {"k": 5}, 400, ("missing required field", "query")),
    ("array body", [QUERY], 400, ("object",)),
    ("null body", None, 400, ("object",)),
    ("not json", b"query=hello", 400, ("not valid JSON",)),
    ("truncated json", b'{"query": "x"', 400, ("not valid JSON",)),
    ("empty body", b"", 400, ("body is empty",)),
    ("oversized body", {"query": "a" * 70_000}, 413, ("65536", "service.max_body_bytes")),
]

BAD_BATCH: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("empty list", {"queries": []}, 400, ("$.queries", "length >= 1")),
    ("too many", {"queries": ["x"] * 65}, 400, ("$.queries", "64", "service.max_batch")),
    ("one blank", {"queries": ["x", " "]}, 400, ("queries[1]", "empty")),
    ("one long", {"queries": ["a" * 1001]}, 400, ("queries[0]", "service.max_query_chars")),
    ("not a list", {"queries": "x"}, 400, ("$.queries", "array")),
    ("item not str", {"queries": ["x", 3]}, 400, ("$.queries[1]", "str")),
    ("k too big", {"queries": ["x"], "k": 500}, 400, ("$.k", "service.max_k")),
    ("unknown field", {"queries": ["x"], "query": "x"}, 400, ("unknown field", "query")),
]


def assert_client_error(r: httpx.Response, status: int, needles: tuple[str, ...]) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status_code", "detail"} and body["status_code"] == status
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])


@pytest.mark.parametrize(("case", "body", "status", "needles"), BAD_SEARCH, ids=[c[0] for c in BAD_SEARCH])
def test_bad_search_input(client: TestClient[Any], case: str, body: Any, status: int, needles: tuple[str, ...]) -> None:
    assert_client_error(post(client, "/search", body), status, needles)


@pytest.mark.parametrize(("case", "body", "status", "needles"), BAD_BATCH, ids=[c[0] for c in BAD_BATCH])
def test_bad_batch_input(client: TestClient[Any], case: str, body: Any, status: int, needles: tuple[str, ...]) -> None:
    assert_client_error(post(client, "/search/batch", body), status, needles)


def test_rerank_without_teacher_is_400(norerank_client: TestClient[Any]) -> None:
    for path, body in [
        ("/search", {"query": QUERY, "rerank": True}),
        ("/search/batch", {"queries": [QUERY], "rerank": True}),
    ]:
        assert_client_error(post(norerank_client, path, body), 400, ("rerank", "service.rerank"))
    assert post(norerank_client, "/search", {"query": QUERY}).status_code == 200


def test_unexpected_error_is_json_500(client: TestClient[Any], engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(engine, "search", boom)
    assert_client_error(post(client, "/search", {"query": QUERY}), 500, ("RuntimeError",))


def test_wrong_method_and_path_are_json(client: TestClient[Any]) -> None:
    assert_client_error(client.get("/search"), 405, ())
    assert_client_error(client.get("/nope"), 404, ())


def test_error_log_line_carries_request_id(
    client: TestClient[Any], engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(engine, "search", boom)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level("ERROR", logger="service"):
        r = post(client, "/search", {"query": QUERY})
    assert r.status_code == 500
    (record,) = [rec for rec in caplog.records if rec.name == "service"]
    assert getattr(record, "request_id", None) == r.headers["x-request-id"]  # set by RequestIdFilter


# ---------------------------------------------------------------- startup with bad artifacts


def _copy_index(index_dir: Path, dest: Path) -> Path:
    shutil.copytree(index_dir, dest)
    return dest


@pytest.mark.parametrize("missing", ["faiss.index", "docids.json", "passages.jsonl", "meta.json"])
def test_validate_names_missing_index_file(
    artifacts: tuple[Path, Path, Path, Params], tmp_path: Path, missing: str
) -> None:
    _, student_dir, index_dir, _ = artifacts
    bad = _copy_index(index_dir, tmp_path / "index")
    (bad / missing).unlink()
    with pytest.raises(ArtifactError, match="dvc repro index") as exc:
        validate_artifacts(student_dir, bad)
    assert str(bad / missing) in str(exc.value)


def test_validate_names_missing_student(artifacts: tuple[Path, Path, Path, Params], tmp_path: Path) -> None:
    _, _, index_dir, _ = artifacts
    with pytest.raises(ArtifactError, match="dvc repro train"):
        validate_artifacts(tmp_path / "nowhere", index_dir)
    fake = tmp_path / "student"
    fake.mkdir()
    with pytest.raises(ArtifactError, match=r"modules\.json.*dvc repro train"):
        validate_artifacts(fake, index_dir)
    (fake / "modules.json").write_text(json.dumps([{"path": "", "type": "x.Transformer"}]))
    (fake / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"model\.safetensors.*dvc repro train"):
        validate_artifacts(fake, index_dir)


def test_load_engine_names_corrupt_index(artifacts: tuple[Path, Path, Path, Params], tmp_path: Path) -> None:
    _, student_dir, index_dir, params = artifacts
    bad = _copy_index(index_dir, tmp_path / "index")
    (bad / "faiss.index").write_bytes(b"not a faiss index")
    with pytest.raises(ArtifactError, match=r"faiss\.index.*dvc repro index"):
        load_engine(Settings(student_dir, bad, params))


def test_load_engine_names_corrupt_student(artifacts: tuple[Path, Path, Path, Params], tmp_path: Path) -> None:
    _, student_dir, index_dir, params = artifacts
    bad = tmp_path / "student"
    bad.mkdir()
    for f in student_dir.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "model.safetensors").unlink()
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match=r"student.*dvc repro train"):
        load_engine(Settings(bad, index_dir, params))


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_exits_cleanly_on_missing_index_file(artifacts: tuple[Path, Path, Path, Params], tmp_path: Path) -> None:
    root, student_dir, index_dir, _ = artifacts
    bad = _copy_index(index_dir, tmp_path / "index")
    (bad / "docids.json").unlink()
    proc = _run_cli(
        "--student", str(student_dir), "--index", str(bad), "--params", str(root / "params.yaml"), "--port", "0"
    )
    assert proc.returncode != 0
    assert str(bad / "docids.json") in proc.stderr and "dvc repro index" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_exits_cleanly_on_missing_student(artifacts: tuple[Path, Path, Path, Params], tmp_path: Path) -> None:
    root, _, index_dir, _ = artifacts
    proc = _run_cli(
        "--index", str(index_dir), "--params", str(root / "params.yaml"), env={"KD_STUDENT_DIR": str(tmp_path / "none")}
    )
    assert proc.returncode != 0
    assert str(tmp_path / "none") in proc.stderr and "dvc repro train" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_main_wires_env_overrides(artifacts: tuple[Path, Path, Path, Params], monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m service`'s happy path up to uvicorn.run: env overrides reach the settings and the server."""
    import uvicorn

    from service.__main__ import main

    root, student_dir, index_dir, _ = artifacts
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setenv("KD_SERVICE_PORT", "8123")
    monkeypatch.setenv("KD_SERVICE_RERANK", "0")
    monkeypatch.setenv("KD_INDEX_DIR", str(index_dir))
    assert main(["--student", str(student_dir), "--params", str(root / "params.yaml")]) == 0
    (call,) = calls
    assert call["port"] == 8123 and call["host"] == "127.0.0.1" and call["workers"] == 1
    with TestClient(call["app"]) as c:
        ready = c.get("/ready").json()
    assert ready["rerank_available"] is False and ready["corpus_size"] == artifacts[3].data.max_passages
    monkeypatch.setenv("KD_SERVICE_PORT", "eighty")
    assert main(["--student", str(student_dir), "--params", str(root / "params.yaml")]) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_real_http_through_uvicorn(artifacts: tuple[Path, Path, Path, Params], engine: Engine) -> None:
    """The app behind a real uvicorn socket on loopback (the engine reused, so this is quick)."""
    import threading

    import uvicorn

    _, student_dir, index_dir, params = artifacts
    app = create_app(Settings(student_dir, index_dir, params), engine=engine)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
        r = httpx.post(f"{url}/search", json={"query": QUERY, "k": 3}, timeout=30)
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        r = httpx.post(f"{url}/search", content=b"x" * 70_000, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "service.max_body_bytes" in r.json()["detail"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_settings_rerank_override() -> None:
    params = Params()
    assert Settings(params=params).rerank_enabled is params.service.rerank
    assert (
        Settings(params=replace(params, service=replace(params.service, rerank=True)), rerank=False).rerank_enabled
        is False
    )


def test_integral_float_is_an_integer(client: TestClient[Any]) -> None:
    """JSON Schema counts 5.0 as an integer, so a schema-valid `"k": 5.0` is accepted; 5.5 is not."""
    r = post(client, "/search", {"query": QUERY, "k": 5.0})
    assert r.status_code == 200 and len(r.json()["results"]) == 5
    assert_client_error(post(client, "/search", {"query": QUERY, "k": 5.5}), 400, ("$.k", "int"))


def test_bad_teacher_corpus_names_the_file(
    artifacts: tuple[Path, Path, Path, Params], engine: Engine, tc_dir: Path, tmp_path: Path
) -> None:
    from kd.models import teacher_corpus
    from service.startup import load_teacher_corpus

    _, student_dir, index_dir, params = artifacts
    tc = teacher_corpus.load(tc_dir)
    other = tmp_path / "other_corpus"
    teacher_corpus.write(other, tc.docids[1:], tc.emb[1:], {**tc.meta})  # one passage short
    settings = Settings(student_dir, index_dir, params, teacher_corpus_dir=other)
    loaded = load_teacher_corpus(settings)
    with pytest.raises(ArtifactError, match=r"other_corpus/docids\.json.*dvc repro teacher_corpus"):
        Engine(settings, engine.student, kd_index.load(index_dir), engine.teacher, loaded)
    wrong_model = tmp_path / "wrong_model"
    teacher_corpus.write(wrong_model, tc.docids, tc.emb, {**tc.meta, "model": "mpnet"})
    with pytest.raises(ArtifactError, match=r"wrong_model/meta\.json.*'mpnet'.*dvc repro teacher_corpus"):
        load_teacher_corpus(Settings(student_dir, index_dir, params, teacher_corpus_dir=wrong_model))
    assert load_teacher_corpus(Settings(student_dir, index_dir, params, teacher_corpus_dir=tmp_path / "no")) is None


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"auth": "token"}, "service.auth='token'"),
        ({"max_concurrent_reranks": 0}, "service.max_concurrent_reranks=0"),
        ({"max_rerank_depth": 500, "max_rerank_pairs": 100}, "service.max_rerank_pairs=100"),
        ({"rate_limit_per_minute": -1}, "service.rate_limit_per_minute=-1"),
        ({"rerank_nice": 20}, "service.rerank_nice=20"),
    ],
)
def test_bad_service_config_names_the_key(changes: dict[str, Any], needle: str) -> None:
    from kd.errors import ConfigError
    from service.settings import check_service_config

    params = Params()
    with pytest.raises(ConfigError) as exc:
        check_service_config(replace(params.service, **changes))
    assert needle in str(exc.value)
