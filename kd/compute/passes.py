"""The interface the stages call: `encode_texts`, `score_pairs` (and `PairScorer` over it), `fingerprint`.

Each sorts its inputs by length, cuts shards of `compute.batch_size`, reuses the kept shards and computes
the rest here (`compute=local`) or on Ray (`compute=ray`), then restores the input order.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd.compute.ray_pool import run_ray
from kd.compute.shards import ShardRunner, digest, load_shard, prepare_chunks, run_local, save_shard, shard_path
from kd.compute.spec import ModelSpec, check, pass_record
from kd.config import ComputeConfig

log = logging.getLogger(__name__)


def run_sharded(
    items: list[Any],
    lengths: list[int],
    spec: ModelSpec,
    op: str,
    cfg: ComputeConfig,
    chunk_dir: Path | None,
    store_dtype: Any,
    runner_cls: type[ShardRunner] = ShardRunner,
) -> np.ndarray:
    """Run `op` over `items` in shards (length-sorted), resuming from `chunk_dir`; rows in input order."""
    check(cfg)
    order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
    size = cfg.batch_size
    shards = [[items[i] for i in order[s : s + size]] for s in range(0, len(order), size)]
    results: dict[int, np.ndarray] = {}
    if chunk_dir is not None:
        inputs = {"count": len(items), "shard_size": size, "op": op, "model": spec.key(), "inputs": digest(items),
                  "dtype": np.dtype(store_dtype).name}  # fmt: skip
        prepare_chunks(chunk_dir, inputs)
        for i, shard in enumerate(shards):
            path = shard_path(chunk_dir, i)
            if path.exists() and (arr := load_shard(path, len(shard))) is not None:
                results[i] = arr
        if results:
            log.info("resuming: %d of %d shards already done in %s", len(results), len(shards), chunk_dir)
    todo = {i: s for i, s in enumerate(shards) if i not in results}

    def keep(i: int, arr: np.ndarray) -> None:
        if chunk_dir is not None:
            save_shard(shard_path(chunk_dir, i), arr, store_dtype)
        results[i] = np.asarray(arr, dtype=store_dtype)

    started = time.perf_counter()
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(shards), initial=len(results), desc=f"{op} ({cfg.backend})", unit="shard", mininterval=5)
        if cfg.backend == "local":
            stream = run_local(todo, spec, op, runner_cls)
        else:
            stream = run_ray(todo, spec, op, cfg, chunk_dir, len(shards), runner_cls)
        for i, arr in stream:
            keep(i, arr)
            bar.update(1)
        bar.close()
    computed = sum(len(todo[i]) for i in todo)
    log.info(pass_record(op, spec, len(items), computed, time.perf_counter() - started))
    if not shards:
        return np.zeros((0, 0 if op == "encode" else 1), dtype=np.float32)
    sorted_out = np.concatenate([results[i] for i in range(len(shards))]).astype(np.float32)
    out = np.empty_like(sorted_out)
    out[order] = sorted_out
    return out


def encode_texts(
    texts: list[str],
    spec: ModelSpec,
    cfg: ComputeConfig,
    chunk_dir: Path | None = None,
    store_dtype: Any = np.float32,
) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (row i is texts[i]), computed where `cfg` says.

    `chunk_dir`: where finished shards are kept (resume after a kill); None keeps nothing.
    `store_dtype`: the shards' on-disk dtype (float16 halves a teacher corpus pass's cache).
    """
    return run_sharded(list(texts), [len(t) for t in texts], spec, "encode", cfg, chunk_dir, store_dtype)


def score_pairs(
    queries: list[str],
    passages: list[str],
    spec: ModelSpec,
    cfg: ComputeConfig,
    chunk_dir: Path | None = None,
) -> np.ndarray:
    """The teacher's score for each (queries[i], passages[i]) (cross-encoder logits or bi-encoder cosine)."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passages: pairs must line up")
    pairs = [[q, p] for q, p in zip(queries, passages)]
    lengths = [len(q) + len(p) for q, p in zip(queries, passages)]
    return run_sharded(pairs, lengths, spec, "score", cfg, chunk_dir, np.float32).reshape(-1)


@dataclass(frozen=True)
class PairScorer:
    """A teacher's `score(queries, passages)` run through `score_pairs`: what stage `teacher` hands
    `kd.distill.teacher_scores.score_groups` for a cross-encoder under `compute=ray`, one Ray pass per chunk of
    `teacher.chunk_groups` groups (raise it on a cluster, so actor start-up and model load amortise)."""

    spec: ModelSpec
    cfg: ComputeConfig

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        """The teacher's score of each (query, passage) pair, `[len(queries)]` float32; as `Teacher.score`."""
        return score_pairs(queries, passages, self.spec, self.cfg)


def fingerprint(texts: list[str], spec: ModelSpec, extra: str = "") -> str:
    """A stable name for a chunk folder: the texts (in order), the model and anything else the caller adds."""
    return hashlib.sha256(f"{digest(list(texts))}\x1f{spec.key()}\x1f{extra}".encode()).hexdigest()[:16]
