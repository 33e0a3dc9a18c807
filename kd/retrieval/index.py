"""FAISS index over student embeddings, with the id map and passage store the service needs.

Layout of an index folder (the `index` stage's out):
    faiss.index      inner-product index over L2-normalised embeddings (so score == cosine): HNSW,
                     IVF-PQ (`index=ivfpq`, approximate scores from PQ codes) or flat; `load` reads either
    docids.json      row -> passage id
    passages.jsonl   {"_id", "title", "text"} in row order (what the service returns)
    meta.json        student model, index type and params, corpus size, provenance
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kd import compute
from kd.atomic import atomic_dir
from kd.config import DEFAULT_SEED, IndexConfig, ModelConfig, Params
from kd.data.io import Corpus, passage_text, read_jsonl
from kd.errors import ArtifactError, ConfigError
from kd.models import teacher_corpus
from kd.models.backends import load_student
from kd.models.loading import embedding_dim, encode
from kd.models.teacher import corpus_key
from kd.paths import sweep_stale


def build(emb: np.ndarray, cfg: IndexConfig, seed: int = DEFAULT_SEED) -> faiss.Index:
    """HNSW, IVF-PQ or exact flat inner-product index. HNSW is built single-threaded (deterministic)."""
    dim = emb.shape[1]
    index: faiss.Index
    if cfg.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.type == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, cfg.M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = cfg.ef_construction
        hnsw.hnsw.efSearch = cfg.ef_search
        index = hnsw
    elif cfg.type == "ivfpq":
        return build_ivfpq(emb, cfg, seed)
    else:
        raise ConfigError(f"index.type={cfg.type!r} is unknown: use 'hnsw', 'ivfpq' or 'flat' (conf/index/)")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # multi-threaded HNSW insertion order is not reproducible
    try:
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def check_ivfpq(cfg: IndexConfig, n: int, dim: int) -> None:
    """Fail before training, naming the key and the fix, for shapes FAISS would reject or degrade on."""
    fix = "set it in conf/index/ivfpq.yaml or with `dvc exp run -S index.<key>=...`"
    for key in ("nlist", "m", "nbits", "nprobe", "train_size", "add_batch"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"index.{key}={getattr(cfg, key)} must be >= 1: {fix}")
    if cfg.nlist > n:
        raise ConfigError(
            f"index.nlist={cfg.nlist} is more centroids than the {n} passages to index: use at most {n} "
            f"(about 4*sqrt(passages) = {max(1, int(4 * n**0.5))}); {fix}"
        )
    if dim % cfg.m:
        divisors = [d for d in range(1, dim + 1) if dim % d == 0 and d <= 128]
        raise ConfigError(
            f"index.m={cfg.m} must divide the embedding dim {dim} (PQ splits each vector into m equal parts): "
            f"use one of {divisors[-6:]}; {fix}"
        )
    if not 1 <= cfg.nbits <= 16:
        raise ConfigError(f"index.nbits={cfg.nbits} must be between 1 and 16 (8 is usual): {fix}")
    sample = min(cfg.train_size, n)
    if sample < cfg.nlist or sample < 2**cfg.nbits:
        raise ConfigError(
            f"IVF-PQ trains on {sample} vectors (min of index.train_size={cfg.train_size} and {n} passages), "
            f"fewer than index.nlist={cfg.nlist} centroids or the 2**index.nbits={2**cfg.nbits} codes per "
            f"sub-quantizer: lower index.nlist / index.nbits or raise index.train_size; {fix}"
        )
    if cfg.nprobe > cfg.nlist:
        raise ConfigError(f"index.nprobe={cfg.nprobe} exceeds index.nlist={cfg.nlist} lists: {fix}")


def build_ivfpq(emb: np.ndarray, cfg: IndexConfig, seed: int = DEFAULT_SEED) -> faiss.Index:
    """IVF-PQ trained on a seeded sample of `index.train_size` vectors, filled `index.add_batch` at a time.

    `emb` may be a memory-mapped array (np.load(mmap_mode="r")): only the sample and one batch are
    ever copied into RAM, which is what lets the index outgrow float32 vectors in memory.
    """
    n, dim = emb.shape
    check_ivfpq(cfg, n, dim)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, cfg.nlist, cfg.m, cfg.nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(cfg.train_size, n), replace=False))
    index.train(np.ascontiguousarray(emb[rows], dtype=np.float32))
    for start in range(0, n, cfg.add_batch):
        index.add(np.ascontiguousarray(emb[start : start + cfg.add_batch], dtype=np.float32))
    index.nprobe = cfg.nprobe
    return index


def bytes_per_vector(index: faiss.Index) -> float:
    """Serialised size / vectors: what one passage costs in RAM once loaded (codes + ids + overhead)."""
    return len(faiss.serialize_index(index)) / max(1, index.ntotal)


def save(out_dir: Path, index: faiss.Index, docids: list[str], corpus: Corpus, meta: dict[str, Any]) -> None:
    """Write an index folder atomically (faiss.index, docids.json, passages.jsonl in row order, meta.json).

    Args:
        out_dir: the folder to (re)place.
        index: the FAISS index; row r is `docids[r]`.
        docids: passage id of each row.
        corpus: docid -> {"title", "text"}, the passages written to passages.jsonl.
        meta: provenance written to meta.json.
    """
    with atomic_dir(out_dir) as tmp:
        faiss.write_index(index, str(tmp / "faiss.index"))
        (tmp / "docids.json").write_text(json.dumps(docids))
        with (tmp / "passages.jsonl").open("w", encoding="utf-8") as fh:
            for d in docids:
                fh.write(json.dumps({"_id": d, **corpus[d]}, ensure_ascii=False) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


@dataclass
class LoadedIndex:
    """An index folder in memory (`load`): the FAISS index, row -> docid, row -> passage, and meta.json."""

    index: faiss.Index
    docids: list[str]
    passages: list[dict[str, str]]
    meta: dict[str, Any]


def load(index_dir: Path) -> LoadedIndex:
    """Load and cross-check an index folder; any problem names the file and `dvc repro index`."""
    fix = "run `dvc repro index` (or `dvc pull`) to rebuild it"
    paths = {n: index_dir / n for n in ("faiss.index", "docids.json", "passages.jsonl", "meta.json")}
    for path in paths.values():
        if not path.exists():
            raise ArtifactError(f"{path} is missing: {fix}")
    try:
        index = faiss.read_index(str(paths["faiss.index"]))
    except RuntimeError as exc:
        raise ArtifactError(f"{paths['faiss.index']} is corrupt ({str(exc)[:120]}): {fix}") from exc
    loaded_json = {}
    for name in ("docids.json", "meta.json"):
        try:
            loaded_json[name] = json.loads(paths[name].read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{paths[name]} is corrupt ({exc.msg}): {fix}") from exc
    docids, meta = loaded_json["docids.json"], loaded_json["meta.json"]
    try:
        passages = [
            {"_id": str(r["_id"]), "title": str(r.get("title", "")), "text": str(r["text"])}
            for _, r in read_jsonl(paths["passages.jsonl"], ("_id", "text"))
        ]
    except Exception as exc:  # noqa: BLE001 - DataError or a decode error: same fix
        raise ArtifactError(f"{paths['passages.jsonl']} is corrupt ({exc}): {fix}") from exc
    if not (index.ntotal == len(docids) == len(passages)):
        raise ArtifactError(
            f"{index_dir}: faiss.index has {index.ntotal} vectors, docids.json {len(docids)}, "
            f"passages.jsonl {len(passages)}; they must match: {fix}"
        )
    bad = next((i for i, (d, p) in enumerate(zip(docids, passages)) if d != p["_id"]), None)
    if bad is not None:
        raise ArtifactError(
            f"{index_dir}: row {bad} is '{docids[bad]}' in docids.json but '{passages[bad]['_id']}' "
            f"in passages.jsonl; they must list the same passages in the same order: {fix}"
        )
    index_meta = meta.get("index", {})
    if isinstance(index, faiss.IndexHNSWFlat) and "ef_search" in index_meta:
        index.hnsw.efSearch = int(index_meta["ef_search"])
    if isinstance(index, faiss.IndexIVF) and "nprobe" in index_meta:  # the params win, as for efSearch
        index.nprobe = int(index_meta["nprobe"])
    return LoadedIndex(index, docids, passages, meta)


def embed_corpus(
    model: Any, corpus: Corpus, prefix: str, batch_size: int, dtype: str = "float32"
) -> tuple[list[str], np.ndarray]:
    """Passage ids (sorted, so row order is stable) and their normalised embeddings."""
    docids = sorted(corpus)
    emb = encode(model, [passage_text(corpus[d]) for d in docids], prefix, batch_size, progress=True, dtype=dtype)
    return docids, emb


def teacher_passages(corpus_dir: Path, teacher: ModelConfig, docids: list[str], texts: list[str], student_dim: int) -> np.ndarray:
    """The teacher's passage matrix (stage `teacher_corpus`), checked, as the vectors of an asymmetric index.

    Refuses a matrix from another corpus or teacher (its fingerprint of texts and model key differs: the
    fix is `dvc repro teacher_corpus`) and one whose width is not the student's (`teacher_corpus.for_student`).
    `docids`/`texts`: the corpus in row order (sorted ids), as the stage wrote it.
    """
    expect = teacher_corpus.fingerprint(docids, texts, corpus_key(teacher))
    view = teacher_corpus.load(corpus_dir, expect_fingerprint=expect, expect_docids=docids)
    return teacher_corpus.for_student(view, student_dim)


def passage_vectors(
    p: Params, spec: compute.ModelSpec, teacher_matrix: Path, docids: list[str], texts: list[str], shard_root: Path
) -> np.ndarray:
    """The rows an index over the corpus holds, as `index.passages` says.

    `teacher` (asymmetric): the teacher's passage matrix (`teacher_passages`), no student corpus pass.
    `student` (symmetric): the pass of the student in `spec` where `compute` says (`kd.compute.encode_texts`),
    in shards kept under `shard_root/<fingerprint of texts and model>/`, so a killed stage resumes.
    `docids`/`texts`: the corpus in row order (sorted ids).
    """
    if p.index.passages == "teacher":
        dim = embedding_dim(load_student(spec.model_dir or spec.cfg.model, "torch"))
        return teacher_passages(teacher_matrix, p.teacher, docids, texts, dim or 0)
    chunk_dir = shard_root / compute.fingerprint(texts, spec)
    sweep_stale(shard_root, keep=chunk_dir.name)  # other inputs' shards, unused for weeks
    return compute.encode_texts(texts, spec, p.compute, chunk_dir)
