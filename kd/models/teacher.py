"""The teacher: one `Teacher` interface for bi- and cross-encoders, how to load it, and the keys that
name its numbers in every cache.

The teacher dominates pipeline time (mpnet: ~7 passages/s on 2 cores), so what it computes is kept:
`kd.models.teacher_cache` (texts and pairs, content-addressed), `kd.models.teacher_corpus` (its passage
matrix), `kd.distill.teacher_scores` (scored training groups). Each is keyed by `model_key`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.models.loading import encode, load_bi_encoder, load_cross_encoder
from kd.models.runtime import autocast, corpus_backend_for, package_versions, use_bf16
from kd.models.store import model_fingerprint, resolve
from kd.models.teacher_corpus import TeacherCorpus
from kd.models.teacher_corpus import load as load_matrix

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

NUMERIC_PACKAGES = ("torch", "transformers", "sentence-transformers")

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


def load_with_matrix(
    cfg: ModelConfig, matrix_dir: Path, docids: list[str]
) -> tuple[BiEncoderTeacher | CrossEncoderTeacher, TeacherCorpus | None]:
    """The teacher, and its passage matrix (stage `teacher_corpus`, rows in `docids` order) when it is a
    bi-encoder; a cross-encoder has none and scores pairs.

    Raises:
        ArtifactError: the matrix is missing or was written for another corpus (names the stage to run).
    """
    teacher = load_teacher(cfg)
    view = load_matrix(matrix_dir, expect_docids=docids) if isinstance(teacher, BiEncoderTeacher) else None
    return teacher, view


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

