"""The bi-encoder teacher's view of the whole corpus, computed once: a float16 matrix + docids.

Stage `teacher_corpus` writes it; mining (the teacher's own top-K), group scoring, the teacher-alone
evaluation, the teacher rerank and the service read it instead of encoding passages again.

On disk (a DVC out):
    embeddings.npy   float16 [N, D], L2-normalised; row i is docids[i]
    docids.json      the corpus ids in row order (sorted)
    meta.json        model, model_key, fingerprint (texts + model), dim, count

The pass itself runs through `kd.compute` (locally or on Ray), in shards kept under
`<cache>/teacher_corpus/<fingerprint>/compute/`, so a killed run resumes from its finished shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd.atomic import atomic_dir
from kd.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
DOCIDS = "docids.json"
META = "meta.json"


def fingerprint(docids: list[str], texts: list[str], model_key: str) -> str:
    """Hash of every (id, text) pair in order and the teacher's model key: what the matrix depends on."""
    digest = hashlib.sha256(model_key.encode() + b"\0")
    for d, t in zip(docids, texts, strict=True):
        digest.update(d.encode() + b"\x1f" + t.encode() + b"\x1e")
    return digest.hexdigest()[:16]


def write(out_dir: Path, docids: list[str], emb: np.ndarray, meta: dict[str, Any]) -> None:
    """Write the view to `out_dir` atomically: the matrix as float16, the docids, and `meta` plus count and dim.

    Args:
        out_dir: the folder to (re)place.
        docids: the N corpus ids, in row order.
        emb: [N, D] passage embeddings (row i is `docids[i]`).
        meta: model, model_key, fingerprint and the like, kept in meta.json.
    """
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / EMBEDDINGS, emb.astype(np.float16))
        (tmp / DOCIDS).write_text(json.dumps(docids))
        (tmp / META).write_text(json.dumps({**meta, "count": len(docids), "dim": int(emb.shape[1])}, indent=2) + "\n")


@dataclass
class TeacherCorpus:
    """The loaded view: docids, the [N, D] float32 normalised passage matrix (row i is `docids[i]`) and its meta."""

    docids: list[str]
    emb: np.ndarray  # float32 [N, D], normalised
    meta: dict[str, Any]

    def rows(self, ids: list[str]) -> np.ndarray:
        """The [len(ids), D] embeddings of the passages `ids`, in that order (KeyError for an unknown id)."""
        pos = self.positions
        return self.emb[[pos[d] for d in ids]]

    @property
    def positions(self) -> dict[str, int]:
        """docid -> row index, built on first use."""
        if not hasattr(self, "_positions"):
            self._positions = {d: i for i, d in enumerate(self.docids)}
        return self._positions

    def top_k(self, q_emb: np.ndarray, k: int, exclude: set[str] | None = None) -> list[list[tuple[str, float]]]:
        """Exact inner-product top-`k` over the whole corpus for each query row (ties by docid); no rows, no lists."""
        if len(q_emb) == 0:
            return []
        scores = q_emb.astype(np.float32) @ self.emb.T
        if exclude:
            scores[:, [self.positions[d] for d in exclude if d in self.positions]] = -np.inf
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out = []
        for i, row in enumerate(top):
            hits = [(self.docids[j], float(scores[i, j])) for j in row if np.isfinite(scores[i, j])]
            out.append(sorted(hits, key=lambda h: (-h[1], h[0])))
        return out


def load(out_dir: Path, expect_fingerprint: str | None = None, expect_docids: list[str] | None = None) -> TeacherCorpus:
    """Read the matrix; a mismatch with the corpus or model is an error naming the fix, never silent."""
    fix = "run `dvc repro teacher_corpus`"
    if not (out_dir / META).exists():
        raise ArtifactError(f"{out_dir} holds no teacher corpus embeddings: {fix}")
    meta = json.loads((out_dir / META).read_text())
    docids = json.loads((out_dir / DOCIDS).read_text())
    emb = np.load(out_dir / EMBEDDINGS).astype(np.float32)
    if emb.shape[0] != len(docids):
        raise ArtifactError(f"{out_dir}: {emb.shape[0]} rows for {len(docids)} docids (a partial write?): {fix}")
    if expect_docids is not None and docids != expect_docids:
        raise ArtifactError(f"{out_dir}/{DOCIDS} does not match data/corpus.jsonl (another corpus?): {fix}")
    if expect_fingerprint is not None and meta.get("fingerprint") != expect_fingerprint:
        raise ArtifactError(
            f"{out_dir}/{META} fingerprint {meta.get('fingerprint')} != {expect_fingerprint} for the current corpus "
            f"texts and teacher settings: {fix}"
        )
    return TeacherCorpus(docids, emb, meta)


def for_student(view: TeacherCorpus, student_dim: int) -> np.ndarray:
    """The teacher's passage matrix as the index of a student that encodes only queries (`index.passages=teacher`).

    Refuses a matrix of another width than the student's embeddings, naming the keys to change: the
    config check (`kd.params.check_passages`) catches most such students before any work starts; this
    catches the rest (a hub checkpoint or a folder whose width only shows once loaded).
    """
    if view.emb.shape[0] == 0:
        raise ConfigError(
            f"index.passages=teacher: the teacher matrix is empty (teacher.kind={view.meta.get('kind')!r} has no "
            "passage embeddings): use index.passages=student"
        )
    if view.emb.shape[1] != student_dim:
        raise ConfigError(
            f"index.passages=teacher: the student embeds in {student_dim} dimensions, the teacher's passages "
            f"({view.meta.get('model')}) in {view.emb.shape[1]}: use a student made from the teacher "
            "(student=static with student.dim=null, student=mpnet_l4) or index.passages=student"
        )
    return view.emb
