"""The teacher's scores of the training groups (stage `teacher`): chunked, resumable, normalised.

Chunks are named by their content, so a re-run skips what it has and another input never reuses them;
nothing deletes what another run may still be using (only chunk folders untouched for
`STALE_AFTER_DAYS` are swept, claimed by a rename).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from kd.artifacts import require
from kd.atomic import atomic_path
from kd.choices import check_score_norm
from kd.config import ModelConfig
from kd.errors import ConfigError, DataError
from kd.models.teacher_cache import CachedTeacher
from kd.models.teacher_corpus import TeacherCorpus
from kd.paths import STALE_AFTER_DAYS, sweep_stale
from kd.retrieval.search import score_matrix_groups, score_text_groups

log = logging.getLogger(__name__)


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
    check_score_norm(mode)
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


def read_groups(path: Path) -> pd.DataFrame:
    """The training groups of stage `negatives`; a missing or empty file names the stage to run."""
    groups = pd.read_parquet(require(path, "negatives"))
    if groups.empty:
        raise DataError(f"{path} is empty: check mining params, then `dvc repro negatives`")
    return groups


def group_queries(groups: pd.DataFrame, train_queries: dict[str, str]) -> dict[str, str]:
    """qid -> query text: the training queries, updated by the text each group stores (stage
    `negatives` keeps it, pseudo-queries and questions rewritten from headings included)."""
    out = dict(train_queries)
    if "query" in groups.columns:
        out.update(zip(groups["qid"].astype(str), groups["query"]))
    return out


def describe(scores: pd.DataFrame) -> str:
    """The raw scores at a glance: mean margin of the positive over the hardest negative, and the mean
    within-group spread (std), the numbers to compare when a teacher or its normalisation changes.

    Example:
        >>> describe(pd.DataFrame({"scores": [[0.9, 0.5, 0.7], [0.8, 0.6, 0.6]]}))
        'raw positive-vs-hardest margin 0.2000, within-group std 0.1288'
    """
    if not len(scores):
        return "no groups"
    margins = [s[0] - max(s[1:]) for s in scores["scores"]]
    spread = [np.std(s) for s in scores["scores"]]
    return f"raw positive-vs-hardest margin {np.mean(margins):.4f}, within-group std {np.mean(spread):.4f}"


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
        scores = score_matrix_groups(q_emb, [view.rows(ids) for ids in doc_ids])
    else:
        passages = [[doc_text[d] for d in ids] for ids in doc_ids]
        scores = score_text_groups(lambda qs, ps: teacher.score(qs, ps, progress=False), texts, passages)
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
