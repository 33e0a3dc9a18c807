"""The teacher's content-addressed cache: every distinct text (or cross-encoder pair) computed once.

The cache lives in `<cache>/teacher/<model key>/` as append-only shards. The negatives stage warms it;
the teacher stage, the evaluation rerank and re-runs reuse it.

Concurrency: `dvc queue start -j 2` runs experiments side by side over one cache. Writers never share a
file name (shards are named by time, pid and a random suffix), every file appears by an atomic rename,
and a shard is never rewritten, so a reader sees whole shards or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kd.atomic import atomic_path
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher, model_key

CROSS_ENCODER_SCORES = "raw-logits"  # cache folder suffix: pair scores once held sigmoid probabilities

log = logging.getLogger(__name__)


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class VectorCache:
    """text -> float32 vector, persisted as npz shards; a crash loses at most the unsaved chunk.

    Shard names sort by creation time and never collide between processes; when two processes
    computed the same text, the older shard's vector wins, in every process.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.vectors: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Read the shards not read yet: this or another process may have added some since."""
        for shard in sorted(self.root.glob("shard-*.npz")):
            if shard.name in self._seen:
                continue
            self._seen.add(shard.name)
            try:
                with np.load(shard) as z:
                    keys, vectors = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                log.warning("skipping unreadable teacher cache shard %s (%s)", shard, exc)
                continue
            for k, v in zip(keys, vectors):
                self.vectors.setdefault(str(k), v)

    def missing(self, texts: list[str]) -> list[str]:
        """The distinct texts of `texts` (first-seen order) that have no cached vector yet."""
        return [t for t in dict.fromkeys(texts) if _key(t) not in self.vectors]

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        """Save `vectors` ([len(texts), D], row i for `texts[i]`) as a new shard and keep them in memory.

        A text that already has a vector keeps the old one.
        """
        keys = [_key(t) for t in texts]
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        with atomic_path(self.root / name) as tmp:
            with tmp.open("wb") as fh:
                np.savez(fh, keys=np.array(keys), vectors=np.asarray(vectors, dtype=np.float32))
        self._seen.add(name)
        for k, v in zip(keys, np.asarray(vectors, dtype=np.float32)):
            self.vectors.setdefault(k, v)

    def get(self, texts: list[str]) -> np.ndarray:
        """The cached vectors of `texts`, stacked: [len(texts), D] (KeyError for a text not cached)."""
        return np.stack([self.vectors[_key(t)] for t in texts])

    def fill(
        self, texts: list[str], compute: Callable[[list[str]], np.ndarray], chunk: int, desc: str
    ) -> np.ndarray:
        """Compute what is missing in chunks (each saved as it completes), then return all."""
        todo = self.missing(texts)
        if todo:
            self.refresh()  # another run may have computed them meanwhile
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
        key = model_key(teacher.cfg)
        if isinstance(teacher, CrossEncoderTeacher):
            key = f"{key}-{CROSS_ENCODER_SCORES}"
        self.cache = VectorCache(cache_root / key)

    def query_vectors(self, queries: list[str], progress: bool = False) -> np.ndarray:
        """A bi-encoder teacher's query embeddings [n, D] (float32, normalised), each text encoded once."""
        t = self.teacher
        if not isinstance(t, BiEncoderTeacher):
            raise TypeError(f"teacher.kind={t.cfg.kind!r} has no query embeddings: score pairs instead")
        return self.cache.fill(["Q\x00" + x for x in queries], lambda xs: t.encode_queries([x[2:] for x in xs]),
                               self.chunk, "teacher queries")  # fmt: skip

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        """The teacher's score of each pair (`queries[i]`, `passages[i]`), computing only what the cache lacks.

        A bi-encoder teacher's query and passage embeddings are cached per text and the score is their dot
        product (cosine); a cross-encoder's scores are cached per pair.

        Returns:
            [n] float32 scores.
        """
        t = self.teacher
        if isinstance(t, BiEncoderTeacher):
            q = self.query_vectors(queries)
            p = self.cache.fill(["P\x00" + x for x in passages], lambda xs: t.encode_passages([x[2:] for x in xs]),
                                self.chunk, "teacher passages")
            return np.einsum("ij,ij->i", q, p).astype(np.float32)
        pairs = [f"{a}\x00{b}" for a, b in zip(queries, passages)]

        def compute(xs: list[str]) -> np.ndarray:
            """Score the `query\\x00passage` keys `xs` with the cross-encoder: [len(xs), 1]."""
            qs, ps = zip(*(x.split("\x00", 1) for x in xs))
            return t.score(list(qs), list(ps)).reshape(-1, 1)

        return self.cache.fill(pairs, compute, self.chunk, "teacher pairs").reshape(-1)

