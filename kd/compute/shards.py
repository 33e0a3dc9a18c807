"""The worker and the shards on disk: `ShardRunner` loads the model once and runs one shard per call; every
finished shard is `<chunk_dir>/part-<i>.npy`, written atomically, so a killed pass resumes from its shards."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kd.atomic import atomic_path, write_text
from kd.compute.spec import ModelSpec
from kd.errors import ArtifactError, ConfigError
from kd.models.backends import load_student
from kd.models.loading import encode
from kd.models.teacher import BiEncoderTeacher, load_teacher

log = logging.getLogger(__name__)


# --- the worker: loads the model once, runs one shard per call ------------------------------------------


class ShardRunner:
    """Loads the model once (per process or per Ray actor); `run` turns one shard's inputs into an array."""

    def __init__(self, spec: ModelSpec, op: str, threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(max(1, threads))
        self.spec, self.op = spec, op
        self._encode: Callable[[list[str]], np.ndarray] | None = None
        self._score: Callable[[list[str], list[str]], np.ndarray] | None = None
        self._load()

    def _load(self) -> None:
        spec, cfg = self.spec, self.spec.cfg
        prefix = cfg.query_prefix if spec.text == "query" else cfg.passage_prefix
        backend = spec.corpus_backend()
        onnx_pass = spec.role == "teacher" and backend != "torch" and spec.text == "passage" and self.op == "encode"
        if spec.role == "student" or onnx_pass:  # a bi-encoder teacher's corpus pass runs like a student's
            model = load_student(spec.model_dir or cfg.model, backend, cfg.max_seq_length)
            self._encode = lambda texts: encode(model, texts, prefix, cfg.batch_size, dtype=cfg.dtype)
            return
        teacher = load_teacher(cfg)
        self._score = teacher.score
        if isinstance(teacher, BiEncoderTeacher):
            self._encode = teacher.encode_queries if spec.text == "query" else teacher.encode_passages

    def run(self, payload: list[Any]) -> np.ndarray:
        """One shard's result.

        Args:
            payload: texts to encode (op `encode`), or `[query, passage]` pairs to score (op `score`).

        Returns:
            float32 `[len(payload), dim]` embeddings, or `[len(payload), 1]` pair scores.
        """
        if self.op == "encode":
            if self._encode is None:
                raise ConfigError(
                    f"teacher.kind={self.spec.cfg.kind!r} has no embeddings to encode: score pairs instead"
                )
            return np.asarray(self._encode(payload), dtype=np.float32)
        assert self._score is not None, "pair scoring needs a teacher (ModelSpec.teacher)"
        qs, ps = [q for q, _ in payload], [p for _, p in payload]
        return np.asarray(self._score(qs, ps), dtype=np.float32).reshape(-1, 1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data entry point: each row is one shard (index + JSON payload); the array goes back as bytes."""
        out: dict[str, list[Any]] = {"shard": [], "rows": [], "cols": [], "data": []}
        for shard, payload in zip(batch["shard"], batch["payload"]):
            arr = np.ascontiguousarray(self.run(json.loads(str(payload))), dtype=np.float32)
            out["shard"].append(int(shard))
            out["rows"].append(arr.shape[0])
            out["cols"].append(arr.shape[1])
            out["data"].append(arr.tobytes())
        return {
            "shard": np.asarray(out["shard"], dtype=np.int64),
            "rows": np.asarray(out["rows"], dtype=np.int64),
            "cols": np.asarray(out["cols"], dtype=np.int64),
            "data": np.asarray(out["data"], dtype=object),
        }


# --- shards on disk ------------------------------------------------------------------------------------------


def shard_path(chunk_dir: Path, i: int) -> Path:
    return chunk_dir / f"part-{i:05d}.npy"


def prepare_chunks(chunk_dir: Path, inputs: dict[str, Any]) -> None:
    """Keep shards only if they were cut from these inputs; a changed input or shard size drops them."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    marker = chunk_dir / "inputs.json"
    if not marker.exists() and any(chunk_dir.glob("part-*.npy")):
        raise ArtifactError(
            f"{chunk_dir} holds part-*.npy files that kd.compute did not write (no inputs.json): "
            "pass a folder of its own as chunk_dir"
        )
    try:
        same = json.loads(marker.read_text()) == inputs
    except (OSError, ValueError):
        same = False
    if not same:
        for f in chunk_dir.glob("part-*.npy"):
            f.unlink()
        write_text(marker, json.dumps(inputs, sort_keys=True))


def save_shard(path: Path, arr: np.ndarray, dtype: Any) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, np.asarray(arr, dtype=dtype))


def load_shard(path: Path, rows: int) -> np.ndarray | None:
    """A finished shard, or None if it is unreadable or of the wrong length (then it is recomputed)."""
    try:
        arr = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == rows else None


def digest(items: list[Any]) -> str:
    digest = hashlib.sha256()
    for x in items:
        digest.update(json.dumps(x, ensure_ascii=False).encode() + b"\x1e")
    return digest.hexdigest()[:16]


def run_local(
    todo: dict[int, list[Any]], spec: ModelSpec, op: str, runner_cls: type[ShardRunner]
) -> Iterator[tuple[int, np.ndarray]]:
    runner = runner_cls(spec, op)
    for i, payload in todo.items():
        yield i, runner.run(payload)
