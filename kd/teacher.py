"""The teacher: one `Teacher` interface for bi- and cross-encoders, its content-addressed cache, and the
chunked, resumable group scorer.

The teacher dominates pipeline time (mpnet: ~7 passages/s on 2 cores), so every distinct text is
encoded once and kept on disk in `<cache>/teacher/<model key>/` as append-only shards. The
negatives stage warms it; the teacher stage, the evaluation rerank and re-runs reuse it.

Concurrency: `dvc queue start -j 2` runs experiments side by side over one cache. Writers never
share a file name (shards are named by time, pid and a random suffix; chunk names are fixed by
their content), every file appears by an atomic rename, and nothing deletes what another run may
still be using (only chunk folders untouched for `STALE_AFTER_DAYS` are swept, claimed by a rename).
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
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from kd.atomic import atomic_path
from kd.config import ModelConfig
from kd.errors import ConfigError, ModelLoadError
from kd.model_store import model_fingerprint, resolve
from kd.models import encode, load_bi_encoder, load_cross_encoder
from kd.paths import STALE_AFTER_DAYS, sweep_stale
from kd.runtime import autocast, corpus_backend_for, package_versions, use_bf16
from kd.teacher_corpus import TeacherCorpus

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

NUMERIC_PACKAGES = ("torch", "transformers", "sentence-transformers")
SCORE_NORMS = ("none", "standardize")
CROSS_ENCODER_SCORES = "raw-logits"  # cache folder suffix: pair scores once held sigmoid probabilities

log = logging.getLogger(__name__)


class Teacher(Protocol):
    """Scores (query, passage) pairs; higher = more relevant. One interface for both kinds."""

    name: str

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        """The teacher's relevance score of each pair (`queries[i]`, `passages[i]`).

        Args:
            queries: n query texts.
            passages: n passage texts, paired with `queries` by position.
            progress: show a progress bar.

        Returns:
            [n] float32 scores.
        """
        ...


class BiEncoderTeacher:
    """Cosine of embeddings. Each distinct text is encoded once per call (passages repeat a lot)."""

    def __init__(self, cfg: ModelConfig, model: SentenceTransformer | None = None) -> None:
        self.name = cfg.model
        self.cfg = cfg
        self.model = model or load_bi_encoder(cfg.model, cfg.max_seq_length)

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """[len(texts), D] L2-normalised float32 embeddings of `texts` as queries (`query_prefix` prepended)."""
        return encode(self.model, texts, self.cfg.query_prefix, self.cfg.batch_size, progress, self.cfg.dtype)

    def encode_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """[len(texts), D] L2-normalised float32 embeddings of `texts` as passages (`passage_prefix` prepended)."""
        return encode(self.model, texts, self.cfg.passage_prefix, self.cfg.batch_size, progress, self.cfg.dtype)

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        """Cosine similarity of each pair (`queries[i]`, `passages[i]`), each distinct text encoded once.

        Args:
            queries: n query texts.
            passages: n passage texts, paired with `queries` by position.
            progress: show a progress bar while encoding the passages.

        Returns:
            [n] float32 cosines.
        """
        uq = list(dict.fromkeys(queries))
        up = list(dict.fromkeys(passages))
        qe = self.encode_queries(uq)
        pe = self.encode_passages(up, progress)
        qi = {t: i for i, t in enumerate(uq)}
        pi = {t: i for i, t in enumerate(up)}
        q = qe[[qi[t] for t in queries]]
        p = pe[[pi[t] for t in passages]]
        return np.einsum("ij,ij->i", q, p).astype(np.float32)


class CrossEncoderTeacher:
    """A sentence-transformers CrossEncoder's raw logit for each pair (two labels: relevant minus not).

    Raw, not `predict`'s default sigmoid: probabilities squash the margins that Margin-MSE and the
    listwise KL learn from; the scale is matched to the student per group (`teacher.score_norm`).
    """

    def __init__(self, cfg: ModelConfig, model: CrossEncoder | None = None) -> None:
        self.name = cfg.model
        self.cfg = cfg
        self.model = model or load_cross_encoder(cfg.model, cfg.max_seq_length)

    def score(self, queries: list[str], passages: list[str], progress: bool = False) -> np.ndarray:
        """The cross-encoder's raw relevance logit of each pair (`queries[i]`, `passages[i]`), prefixes prepended.

        A one-label model gives its logit; a model with several labels gives the last minus the first.

        Args:
            queries: n query texts.
            passages: n passage texts, paired with `queries` by position.
            progress: show a progress bar.

        Returns:
            [n] float32 scores.
        """
        import torch

        pairs = [(self.cfg.query_prefix + q, self.cfg.passage_prefix + p) for q, p in zip(queries, passages)]
        with autocast(self.cfg.dtype):
            out = self.model.predict(
                pairs,  # type: ignore[arg-type]
                batch_size=self.cfg.batch_size,
                show_progress_bar=progress,
                activation_fn=torch.nn.Identity(),
                apply_softmax=False,
            )
        logits = np.asarray(out, dtype=np.float32).reshape(len(pairs), -1)
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]


def load_teacher(cfg: ModelConfig) -> BiEncoderTeacher | CrossEncoderTeacher:
    """The teacher of kind `cfg.kind` (`bi_encoder` or `cross_encoder`), its model loaded.

    Raises:
        ModelLoadError: an unknown `teacher.kind`.
    """
    if cfg.kind == "bi_encoder":
        return BiEncoderTeacher(cfg)
    if cfg.kind == "cross_encoder":
        return CrossEncoderTeacher(cfg)
    raise ModelLoadError(
        f"teacher.kind={cfg.kind!r} is unknown: use 'bi_encoder' or 'cross_encoder' (conf/teacher/)"
    )


def corpus_key(cfg: ModelConfig) -> str:
    """`model_key` of the teacher's corpus pass (stage `teacher_corpus`): the backend that encodes it
    (`teacher.corpus_backend`, `auto` resolved on this CPU) joins the key when it is not torch, so an
    int8 matrix never stands in for a float one."""
    backend = corpus_backend_for(cfg.corpus_backend)
    key = model_key(cfg)
    return key if backend == "torch" else hashlib.sha1(f"{key}\x1f{backend}".encode()).hexdigest()[:16]


def model_key(cfg: ModelConfig) -> str:
    """Everything that changes the teacher's numbers, hashed.

    The config fields, the compute dtype as resolved on this CPU (`auto` on a bf16 CPU and `bfloat16`
    give the same numbers), the model's content (a local folder's files; a hub id by its name, pin
    `teacher.model` to a local snapshot for a content key) and the versions of the numeric libraries.
    """
    path = Path(resolve(cfg.model))
    content = model_fingerprint(path) if path.is_dir() else "hub:" + cfg.model
    versions = package_versions(NUMERIC_PACKAGES)
    fields = [
        cfg.kind, cfg.model, str(cfg.max_seq_length), cfg.query_prefix, cfg.passage_prefix,
        "bfloat16" if use_bf16(cfg.dtype) else "float32", content,
        *(f"{k}={v}" for k, v in sorted(versions.items())),
    ]  # fmt: skip
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:16]


def normalize_scores(scores: np.ndarray, mode: str, scale: float = 0.1) -> np.ndarray:
    """One group's teacher scores on the student's scale (`teacher.score_norm`, `teacher.score_scale`).

    `none`: unchanged (a bi-encoder teacher's cosines already live where the student's do).
    `standardize`: (s - mean) / std * scale, so a cross-encoder's logits (any offset, any spread)
    become differences the size of a cosine student's, which is what Margin-MSE and a KL at
    temperature ~0.05 are tuned for. Both losses ignore a shift, so the mean is 0. A group whose
    scores are all equal carries no order: it becomes all zeros.
    """
    s = np.asarray(scores, dtype=np.float64)
    if mode == "none":
        return s.astype(np.float32)
    if mode != "standardize":
        raise ConfigError(f"teacher.score_norm={mode!r} is unknown: use one of {', '.join(SCORE_NORMS)} (conf/teacher/)")
    if not scale > 0:
        raise ConfigError(f"teacher.score_scale={scale!r} must be > 0 (the per-group std of the standardised scores)")
    std = s.std()
    if s.size < 2 or std == 0:
        return np.zeros(s.shape, dtype=np.float32)
    return ((s - s.mean()) / std * scale).astype(np.float32)


def normalize_groups(frame: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """`normalize_scores` applied to every group of a teacher-scores frame (qid, doc_ids, scores)."""
    out = frame.copy()
    out["scores"] = [normalize_scores(np.asarray(s), cfg.score_norm, cfg.score_scale).tolist() for s in frame["scores"]]
    return out


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


class PairScorer(Protocol):
    """Anything that scores (query, passage) pairs like `CachedTeacher.score`."""

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        """The score of each pair (`queries[i]`, `passages[i]`): [n] float32."""
        ...


def group_fingerprint(groups: pd.DataFrame, query_text: dict[str, str], doc_text: dict[str, str], salt: str) -> str:
    """Hash of every group's query id and text and its passages' ids and texts, in order, and `salt`.

    The chunk folder's name: a change to any text (say `data.min_words` rewrites passages under the
    same ids) or to the teacher (in `salt`) starts a new folder instead of reusing old scores.
    """
    digest = hashlib.sha256(salt.encode() + b"\0")
    for qid, pos, negs in zip(groups["qid"], groups["pos_id"], groups["neg_ids"]):
        digest.update(f"{qid}\x1f{query_text[str(qid)]}\x1e".encode())
        for d in [str(pos), *map(str, negs)]:
            digest.update(f"{d}\x1f{doc_text[d]}\x1e".encode())
        digest.update(b"\x1d")
    return digest.hexdigest()[:16]


def score_chunk(
    rows: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    teacher: CachedTeacher | PairScorer,
    view: TeacherCorpus | None = None,
) -> pd.DataFrame:
    """Score one chunk of groups: qid, doc_ids (positive first), scores.

    With `view` (a bi-encoder teacher's passage matrix, stage `teacher_corpus`) a score is the dot
    product of the teacher's query embedding with the passage's row, the numbers mining used; else
    the teacher scores each (query, passage) text pair (a cross-encoder).
    """
    doc_ids = [[str(p), *map(str, n)] for p, n in zip(rows["pos_id"], rows["neg_ids"])]
    texts = [query_text[str(q)] for q in rows["qid"]]
    if view is not None:
        if not isinstance(teacher, CachedTeacher):
            raise TypeError("scoring against the teacher's passage matrix needs a CachedTeacher for the queries")
        q_emb = teacher.query_vectors(texts)
        scores = [view.rows(ids) @ q for ids, q in zip(doc_ids, q_emb)]
    else:
        qs = [t for t, ids in zip(texts, doc_ids) for _ in ids]
        ps = [doc_text[d] for ids in doc_ids for d in ids]
        flat = teacher.score(qs, ps, progress=False)
        scores = np.split(flat, np.cumsum([len(ids) for ids in doc_ids])[:-1])
    return pd.DataFrame(
        {"qid": rows["qid"].tolist(), "doc_ids": doc_ids, "scores": [np.asarray(s, dtype=np.float32).tolist() for s in scores]}
    )


def score_groups(
    groups: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    teacher: CachedTeacher | PairScorer,
    chunk_dir: Path,
    fingerprint: str,
    chunk_size: int = 64,
    view: TeacherCorpus | None = None,
) -> pd.DataFrame:
    """Score every (query, positive + negatives) group in chunks kept under `chunk_dir/<inputs hash>/`.

    The folder is `group_fingerprint` of the groups' texts and `fingerprint` (the teacher, the
    scoring mode), so chunks are reused only for identical inputs; a chunk's file name carries the
    chunk size and index, so chunks cut at another `teacher.chunk_groups` are never spliced in. An
    interrupted run leaves its finished chunks and the next run skips them. Scores are the teacher's
    raw numbers (normalisation is `normalize_groups`, later). Output: qid, doc_ids (positive first), scores.
    """
    if chunk_size < 1:
        raise ConfigError(f"teacher.chunk_groups={chunk_size} must be >= 1")
    salt = fingerprint + ("" if view is None else f"|view:{view.meta.get('fingerprint', '')}")
    key = group_fingerprint(groups, query_text, doc_text, salt)
    parts_dir = chunk_dir / key
    parts_dir.mkdir(parents=True, exist_ok=True)
    os.utime(parts_dir)  # in use: keeps `sweep_stale` of other runs away
    swept = sweep_stale(chunk_dir, keep=key)
    if swept:
        log.info("swept %d teacher chunk folder(s) unused for %g days", len(swept), STALE_AFTER_DAYS)
    frames = []
    n_chunks = (len(groups) + chunk_size - 1) // chunk_size
    for i in tqdm(range(n_chunks), desc="teacher chunks", unit="chunk"):
        path = parts_dir / f"part-{chunk_size}-{i:05d}.parquet"
        if not path.exists():
            frame = score_chunk(groups.iloc[i * chunk_size : (i + 1) * chunk_size], query_text, doc_text, teacher, view)
            with atomic_path(path) as tmp:
                frame.to_parquet(tmp, index=False)
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["qid", "doc_ids", "scores"])
