"""Teacher scoring with a content-addressed cache, and the chunked, resumable group scorer.

The teacher dominates pipeline time (mpnet: ~7 passages/s on 2 cores), so every distinct text is
encoded once and kept on disk in `<cache>/teacher/<model key>/` as append-only shards. The
negatives stage warms it; the teacher stage, the evaluation rerank and re-runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from kd.atomic import atomic_path, write_text
from kd.config import ModelConfig
from kd.models import BiEncoderTeacher, CrossEncoderTeacher


def model_key(cfg: ModelConfig) -> str:
    """Everything that changes the teacher's numbers, hashed."""
    fields = [cfg.kind, cfg.model, str(cfg.max_seq_length), cfg.query_prefix, cfg.passage_prefix]
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:16]


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class VectorCache:
    """text -> float32 vector, persisted as npz shards; a crash loses at most the unsaved chunk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.vectors: dict[str, np.ndarray] = {}
        for shard in sorted(self.root.glob("shard-*.npz")):
            with np.load(shard) as z:
                for k, v in zip(z["keys"], z["vectors"]):
                    self.vectors[str(k)] = v

    def missing(self, texts: list[str]) -> list[str]:
        return [t for t in dict.fromkeys(texts) if _key(t) not in self.vectors]

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        keys = [_key(t) for t in texts]
        for k, v in zip(keys, vectors):
            self.vectors[k] = v
        n = len(list(self.root.glob("shard-*.npz")))
        with atomic_path(self.root / f"shard-{n:06d}.npz") as tmp:
            with tmp.open("wb") as fh:
                np.savez(fh, keys=np.array(keys), vectors=np.asarray(vectors, dtype=np.float32))

    def get(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[_key(t)] for t in texts])

    def fill(
        self, texts: list[str], compute: Callable[[list[str]], np.ndarray], chunk: int, desc: str
    ) -> np.ndarray:
        """Compute what is missing in chunks (each saved as it completes), then return all."""
        todo = self.missing(texts)
        if todo:
            bar = tqdm(total=len(todo), desc=desc, unit="text", mininterval=2)
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                self.add(part, compute(part))
                bar.update(len(part))
            bar.close()
        return self.get(texts)


class CachedTeacher:
    """`score(queries, passages)` for either teacher kind, through the on-disk cache."""

    def __init__(self, teacher: BiEncoderTeacher | CrossEncoderTeacher, cache_root: Path, chunk: int = 256) -> None:
        self.teacher = teacher
        self.name = teacher.name
        self.chunk = chunk
        self.cache = VectorCache(cache_root / model_key(teacher.cfg))

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        t = self.teacher
        if isinstance(t, BiEncoderTeacher):
            q = self.cache.fill(["Q\x00" + x for x in queries], lambda xs: t.encode_queries([x[2:] for x in xs]),
                                self.chunk, "teacher queries")
            p = self.cache.fill(["P\x00" + x for x in passages], lambda xs: t.encode_passages([x[2:] for x in xs]),
                                self.chunk, "teacher passages")
            return np.einsum("ij,ij->i", q, p).astype(np.float32)
        pairs = [f"{a}\x00{b}" for a, b in zip(queries, passages)]

        def compute(xs: list[str]) -> np.ndarray:
            qs, ps = zip(*(x.split("\x00", 1) for x in xs))
            return t.score(list(qs), list(ps)).reshape(-1, 1)

        return self.cache.fill(pairs, compute, self.chunk, "teacher pairs").reshape(-1)


def score_groups(
    groups: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    teacher: CachedTeacher,
    chunk_dir: Path,
    fingerprint: str,
    chunk_size: int = 64,
) -> pd.DataFrame:
    """Score every (query, positive + negatives) group in chunks kept under `chunk_dir/fingerprint`.

    An interrupted run leaves its finished chunks; the next run with the same inputs (same
    fingerprint) skips them. Output: qid, doc_ids (positive first), scores.
    """
    parts_dir = chunk_dir / fingerprint
    parts_dir.mkdir(parents=True, exist_ok=True)
    for stale in chunk_dir.iterdir():  # chunks of other inputs can never be reused
        if stale.is_dir() and stale.name != fingerprint:
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()
    inputs = {"rows": len(groups), "chunk_size": chunk_size}
    marker = parts_dir / "inputs.json"
    try:
        same_layout = json.loads(marker.read_text()) == inputs
    except (OSError, ValueError):
        same_layout = False
    if not same_layout:  # chunks cut at another size (teacher.chunk_groups changed) do not line up
        for f in parts_dir.glob("part-*.parquet"):
            f.unlink()
        write_text(marker, json.dumps(inputs))
    frames = []
    n_chunks = (len(groups) + chunk_size - 1) // chunk_size
    for i in tqdm(range(n_chunks), desc="teacher chunks", unit="chunk"):
        path = parts_dir / f"part-{i:05d}.parquet"
        if not path.exists():
            rows = groups.iloc[i * chunk_size : (i + 1) * chunk_size]
            doc_ids = [[str(p), *map(str, n)] for p, n in zip(rows["pos_id"], rows["neg_ids"])]
            qs = [query_text[str(q)] for q, ids in zip(rows["qid"], doc_ids) for _ in ids]
            ps = [doc_text[d] for ids in doc_ids for d in ids]
            flat = teacher.score(qs, ps, progress=False)
            sizes = [len(ids) for ids in doc_ids]
            scores = np.split(flat, np.cumsum(sizes)[:-1])
            frame = pd.DataFrame(
                {"qid": rows["qid"].tolist(), "doc_ids": doc_ids, "scores": [s.tolist() for s in scores]}
            )
            with atomic_path(path) as tmp:
                frame.to_parquet(tmp, index=False)
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["qid", "doc_ids", "scores"])
