"""FAISS index: exact flat search, HNSW recall, save/load and its failure messages, determinism."""

from __future__ import annotations

import dataclasses
import json
import re

import faiss
import numpy as np
import pytest

from kd.config import IndexConfig
from kd.errors import ArtifactError, ConfigError
from kd.retrieval import index as kdindex
from kd.retrieval import search as kd_search

N, DIM, K = 2000, 32, 10
FLAT = IndexConfig(type="flat")
HNSW = IndexConfig(type="hnsw", M=16, ef_construction=100, ef_search=64)


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    emb, queries = unit(N, 0), unit(50, 1)
    docids = [f"doc{i}" for i in range(N)]
    corpus = {d: {"title": f"t{i}", "text": f"passage {i} ü"} for i, d in enumerate(docids)}
    return emb, queries, docids, corpus


def test_flat_is_exact(data):
    emb, queries, docids, _ = data
    hits = kd_search.search(kdindex.build(emb, FLAT), queries, docids, K)
    scores = queries @ emb.T
    for row, h in zip(scores, hits, strict=True):
        assert h[0][0] == docids[int(np.argmax(row))]
        assert h[0][1] == pytest.approx(float(row.max()), abs=1e-5)
        assert [s for _, s in h] == sorted((s for _, s in h), reverse=True)
    run = kd_search.to_run([f"q{i}" for i in range(len(hits))], hits)
    assert len(run) == 50 and all(len(v) == K for v in run.values())


def test_hnsw_recall_against_flat(data):
    emb, queries, docids, _ = data
    exact = kd_search.search(kdindex.build(emb, FLAT), queries, docids, K)
    approx = kd_search.search(kdindex.build(emb, HNSW), queries, docids, K)
    found = sum(len({d for d, _ in a} & {d for d, _ in e}) for a, e in zip(approx, exact, strict=True))
    assert found / (K * len(queries)) >= 0.95


def test_build_is_deterministic(data):
    emb, queries, docids, _ = data
    first = kd_search.search(kdindex.build(emb, HNSW), queries, docids, K)
    second = kd_search.search(kdindex.build(emb, HNSW), queries, docids, K)
    assert first == second


def test_unknown_type():
    with pytest.raises(ConfigError, match="index.type='ivf'"):
        kdindex.build(unit(4, 0), IndexConfig(type="ivf"))


@pytest.fixture
def saved(tmp_path, data):
    emb, _, docids, corpus = data
    out = tmp_path / "index"
    meta = {"index": {"type": "hnsw", "ef_search": 200}, "student": "minilm"}
    kdindex.save(out, kdindex.build(emb, HNSW), docids, corpus, meta)
    return out


def test_save_load_round_trip(saved, data):
    emb, queries, docids, corpus = data
    loaded = kdindex.load(saved)
    assert loaded.docids == docids
    assert loaded.passages[3] == {"_id": "doc3", **corpus["doc3"]}
    assert loaded.meta["student"] == "minilm"
    assert isinstance(loaded.index, faiss.IndexHNSWFlat) and loaded.index.hnsw.efSearch == 200
    original = kdindex.build(emb, HNSW)
    original.hnsw.efSearch = 200
    assert kd_search.search(loaded.index, queries, docids, K) == kd_search.search(original, queries, docids, K)


def _load_fails(folder, *patterns):
    with pytest.raises(ArtifactError) as info:
        kdindex.load(folder)
    message = str(info.value)
    assert "dvc repro index" in message
    for pat in patterns:
        assert re.search(pat, message), message


def test_missing_file(saved):
    (saved / "faiss.index").unlink()
    _load_fails(saved, re.escape(str(saved / "faiss.index")) + " is missing")


def test_mismatched_docids(saved):
    docids = json.loads((saved / "docids.json").read_text())
    (saved / "docids.json").write_text(json.dumps(docids[:-1]))
    _load_fails(saved, "docids.json 1999", "faiss.index has 2000")


def test_docids_not_matching_passages(saved):
    docids = json.loads((saved / "docids.json").read_text())
    (saved / "docids.json").write_text(json.dumps(docids[1:] + docids[:1]))  # same count, wrong order
    _load_fails(saved, "docids.json", "passages.jsonl")


def test_corrupt_files(saved):
    (saved / "faiss.index").write_bytes(b"not an index")
    _load_fails(saved, re.escape(str(saved / "faiss.index")) + " is corrupt")


def test_corrupt_passages(saved):
    with (saved / "passages.jsonl").open("a") as fh:
        fh.write("{oops\n")
    _load_fails(saved, re.escape(str(saved / "passages.jsonl")) + " is corrupt")


@pytest.mark.parametrize("name", ["docids.json", "meta.json"])
def test_corrupt_json(saved, name):
    (saved / name).write_text("[1, 2")
    _load_fails(saved, re.escape(str(saved / name)) + " is corrupt")


def test_k_above_index_size_and_no_queries():
    emb = unit(3, 2)
    index = kdindex.build(emb, FLAT)
    hits = kd_search.search(index, emb, ["a", "b", "c"], k=10)
    assert [h[0][0] for h in hits] == ["a", "b", "c"] and all(len(h) == 3 for h in hits)
    assert kd_search.search(index, emb[:0], ["a", "b", "c"], k=10) == []


# --- IVF-PQ (index=ivfpq) ---------------------------------------------------------------------------------
IVFPQ = IndexConfig(type="ivfpq", nlist=16, m=16, nbits=8, nprobe=16, train_size=1500, add_batch=300)


def clustered(rows: int, seed: int, centers: int = 40) -> np.ndarray:
    """Unit vectors around a few centres: the structure real embeddings have and PQ relies on."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(99).standard_normal((centers, DIM)).astype(np.float32)
    x = c[rng.integers(0, centers, rows)] + 0.3 * rng.standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(approx, exact) -> float:
    found = sum(len({d for d, _ in a} & {d for d, _ in e}) for a, e in zip(approx, exact, strict=True))
    return found / sum(len(e) for e in exact)


@pytest.mark.slow
def test_ivfpq_recall_against_flat():
    emb, queries = clustered(N, 0), clustered(50, 1)
    docids = [f"doc{i}" for i in range(N)]
    exact = kd_search.search(kdindex.build(emb, FLAT), queries, docids, K)
    index = kdindex.build(emb, IVFPQ)
    assert isinstance(index, faiss.IndexIVFPQ) and index.ntotal == N and index.nprobe == 16
    assert _recall(kd_search.search(index, queries, docids, K), exact) >= 0.6
    narrow = kdindex.build(emb, dataclasses.replace(IVFPQ, nprobe=1))  # fewer lists probed: recall drops, still works
    assert (
        0
        < _recall(kd_search.search(narrow, queries, docids, K), exact)
        <= _recall(kd_search.search(index, queries, docids, K), exact)
    )
    assert kdindex.bytes_per_vector(index) < DIM * 4  # 16 code bytes + 8 id bytes vs 128 float32 bytes


@pytest.mark.slow
def test_ivfpq_is_deterministic_and_batching_does_not_matter():
    emb, queries = clustered(N, 0), clustered(20, 1)
    docids = [f"doc{i}" for i in range(N)]
    first = kd_search.search(kdindex.build(emb, IVFPQ), queries, docids, K)
    assert first == kd_search.search(kdindex.build(emb, IVFPQ), queries, docids, K)
    one_batch = dataclasses.replace(IVFPQ, add_batch=10**6)
    assert first == kd_search.search(kdindex.build(emb, one_batch), queries, docids, K)


@pytest.mark.slow
def test_ivfpq_from_memmap(tmp_path):
    emb = clustered(N, 0)
    np.save(tmp_path / "emb.npy", emb)
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    docids = [f"doc{i}" for i in range(N)]
    q = clustered(5, 1)
    assert kd_search.search(kdindex.build(mapped, IVFPQ), q, docids, K) == kd_search.search(
        kdindex.build(emb, IVFPQ), q, docids, K
    )


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"nlist": N + 1}, rf"index.nlist={N + 1} is more centroids than the {N} passages"),
        ({"m": 7}, r"index.m=7 must divide the embedding dim 32"),
        ({"nbits": 20}, r"index.nbits=20 must be between 1 and 16"),
        ({"nprobe": 17}, r"index.nprobe=17 exceeds index.nlist=16"),
        ({"train_size": 100}, r"index.train_size=100 .* lower index.nlist / index.nbits or raise index.train_size"),
        ({"nlist": 0}, r"index.nlist=0 must be >= 1"),
    ],
)
def test_ivfpq_bad_params(change, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        kdindex.build(clustered(N, 0), dataclasses.replace(IVFPQ, **change))
    assert "conf/index/ivfpq.yaml" in str(info.value)


@pytest.mark.slow
def test_ivfpq_save_load_round_trip(tmp_path, data):
    _, _, docids, corpus = data
    emb, queries = clustered(N, 0), clustered(20, 1)
    built = kdindex.build(emb, IVFPQ)
    meta = {"index": {"type": "ivfpq", "nprobe": 4}}
    kdindex.save(tmp_path / "index", built, docids, corpus, meta)
    loaded = kdindex.load(tmp_path / "index")
    assert isinstance(loaded.index, faiss.IndexIVFPQ) and loaded.index.nprobe == 4  # meta's nprobe wins
    built.nprobe = 4
    assert kd_search.search(loaded.index, queries, docids, K) == kd_search.search(built, queries, docids, K)
