"""What the service serves, with no HTTP in it: the loaded models and index, and the search.

Kept apart from `service.app` so the search logic can be tested without a server; `service.startup`
checks the artifacts and builds the one `Engine` a process serves.

Reranking has two modes. `embeddings`: a bi-encoder teacher whose passage embeddings the pipeline
computed once (stage `teacher_corpus`); a request encodes only its query with the teacher and takes
dot products with the candidates' rows (tens of ms instead of seconds). `pairs`: a cross-encoder
teacher, or no precomputed embeddings; the teacher scores each (query, passage) pair, bounded by
`service.max_scored_pairs`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from kd.config import ServiceConfig
from kd.data.io import passage_text
from kd.errors import ArtifactError
from kd.models.backends import OnnxQueryEncoder
from kd.models.loading import encode
from kd.retrieval.index import LoadedIndex
from kd.retrieval.search import (
    RowHits,
    encode_queries,
    rerank_hits,
    score_matrix_groups,
    score_text_groups,
    search_rows,
)
from service.schemas import ReadyInfo, RegistryInfo, StudentInfo, TeacherInfo
from service.settings import Settings, limits

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from kd.models.teacher import Teacher
    from kd.models.teacher_corpus import TeacherCorpus

log = logging.getLogger("service")

TEACHER_CORPUS_FIX = "run `dvc repro teacher_corpus` (or `dvc pull`), or remove the folder to score pairs instead"
INDEX_META_KEYS = ("passages", "type", "M", "ef_construction", "ef_search", "metric", "dim", "faiss_class", "ef_search_live")


class Engine:
    """The loaded student, FAISS index, id map, passage store, optional teacher and its passage embeddings.

    Model calls through sentence-transformers are serialised with a lock per model: a Hugging Face
    fast tokenizer is not safe to call from several threads at once ("Already borrowed"). The ONNX
    query path (`OnnxQueryEncoder`: its own tokenizer, set once; one intra-op thread per call) takes
    no lock, so plain searches use every core. The student and teacher locks are separate, so a
    rerank never blocks plain searches on the teacher.
    """

    def __init__(
        self,
        settings: Settings,
        student: SentenceTransformer,
        index: LoadedIndex,
        teacher: Teacher | None,
        teacher_corpus: TeacherCorpus | None = None,
        registry: RegistryInfo | None = None,
    ) -> None:
        self.settings = settings
        self.student = student
        self.faiss = index.index
        self.docids = index.docids
        self.passages = index.passages
        self.meta = index.meta
        self.teacher = teacher
        self.registry = registry
        self.query_prefix = settings.params.student.query_prefix
        self.corpus_size = int(self.faiss.ntotal)
        self.fast_encode = OnnxQueryEncoder.from_model(student)  # the ONNX query path; None: torch backend, use encode()
        self._student_lock = threading.Lock()
        self._teacher_lock = threading.Lock()
        self._teacher_emb: np.ndarray | None = None  # float32 [N, D], row i = index row i
        if teacher is not None and teacher_corpus is not None:
            self._teacher_emb = _align(teacher_corpus, index.docids, settings.teacher_corpus_path)
        self.ready_info = self._ready_info()

    @property
    def rerank_available(self) -> bool:
        return self.teacher is not None

    @property
    def rerank_mode(self) -> str | None:
        """`embeddings` (dot products with precomputed rows), `pairs` (teacher scores pairs) or None."""
        if self.teacher is None:
            return None
        return "embeddings" if self._teacher_emb is not None else "pairs"

    @property
    def student_name(self) -> str:
        if self.registry is not None:
            return f"{self.registry.name}/{self.registry.version}"
        return self.ready_info.student.name

    def rerank_pair_cap(self) -> tuple[int, str]:
        """(max queries x candidates per request, the config key that sets it) for the current mode."""
        svc = self.settings.service
        if self.rerank_mode == "embeddings":
            return svc.max_rerank_pairs, "service.max_rerank_pairs"
        return svc.max_scored_pairs, "service.max_scored_pairs"

    def encode(self, queries: list[str]) -> np.ndarray:
        """L2-normalised float32 query embeddings, all queries in one forward pass."""
        texts = [self.query_prefix + q for q in queries] if self.query_prefix else queries
        if self.fast_encode is not None:  # no lock: its tokenizer is never reconfigured, and a session runs concurrently
            return encode_queries(self.student, texts, self.fast_encode)
        with self._student_lock:
            return encode_queries(self.student, texts)

    def encode_texts(self, texts: list[str], normalize: bool) -> np.ndarray:
        """`POST /encode`: the student's embeddings of texts as given (passages: no query prefix)."""
        with self._student_lock:
            emb = encode(self.student, texts, batch_size=min(max(len(texts), 1), 32), normalize=normalize)
        return np.ascontiguousarray(emb)

    def search(self, queries: list[str], k: int, rerank: bool = False, rerank_depth: int = 0) -> RowHits:
        """Per query, `(row, score)` best first: student cosine, or teacher score when reranking.

        With `rerank`, the teacher re-scores the student's top max(k, rerank_depth) and the best k are kept.
        """
        hits = search_rows(self.faiss, self.encode(queries), max(k, rerank_depth) if rerank else k)
        if not rerank:
            return hits
        scores = self._teacher_scores(queries, hits)
        return [rerank_hits(h, s, k) for h, s in zip(hits, scores, strict=True)]

    def _teacher_scores(self, queries: list[str], hits: RowHits) -> list[np.ndarray]:
        if self.teacher is None:
            raise RuntimeError("rerank requested but no teacher is loaded")
        if self._teacher_emb is not None:
            from kd.models.teacher import BiEncoderTeacher

            assert isinstance(self.teacher, BiEncoderTeacher)
            with self._teacher_lock:
                q_emb = self.teacher.encode_queries(queries)
            return score_matrix_groups(q_emb, [self._teacher_emb[[r for r, _ in h]] for h in hits])
        passages = [[passage_text(self.passages[r]) for r, _ in h] for h in hits]
        with self._teacher_lock:
            return score_text_groups(self.teacher.score, queries, passages)

    def warm_up(self) -> None:
        """One real search (and teacher score) at startup, so the first request does not pay for lazy init."""
        self.search(["warm up"], 1)
        if self.teacher is not None:
            self.search(["warm up"], 1, rerank=True, rerank_depth=1)

    def _ready_info(self) -> ReadyInfo:
        params, svc = self.settings.params, self.settings.service
        raw_index = dict(self.meta.get("index") or {})
        raw_index.setdefault("type", params.index.type)
        raw_index["passages"] = str(self.meta.get("passages", "student"))
        raw_index["faiss_class"] = type(self.faiss).__name__
        raw_index["dim"] = int(self.faiss.d)
        if hasattr(self.faiss, "hnsw"):
            raw_index["ef_search_live"] = int(self.faiss.hnsw.efSearch)
        index_meta = {k: raw_index[k] for k in INDEX_META_KEYS if k in raw_index}  # no paths, no free-form meta
        teacher = None
        if self.teacher is not None:
            cfg = params.teacher
            teacher = TeacherInfo(name=cfg.name, model=cfg.model, kind=cfg.kind, rerank_mode=self.rerank_mode or "")
        student_meta = self.meta.get("student")
        name = student_meta if isinstance(student_meta, str) else params.student.name
        if isinstance(student_meta, dict):
            name = str(student_meta.get("name", name))
        if self.registry is not None:
            name = f"{self.registry.name}/{self.registry.version}"
        if "/" in name and Path(name).is_absolute():
            name = Path(name).name  # a local path is not for clients
        return ReadyInfo(
            status="ready",
            student=StudentInfo(
                name=name,
                source="registry" if self.registry is not None else "dvc",
                registry=self.registry,
                max_seq_length=_length_limit(self.student.max_seq_length),
                embedding_dim=int(self.faiss.d),
                query_prefix=self.query_prefix,
            ),
            teacher=teacher,
            rerank_available=self.rerank_available,
            corpus_size=self.corpus_size,
            index=index_meta,
            git_commit=_opt_str(self.meta.get("git_commit")),
            dvc_experiment=_opt_str(self.meta.get("dvc_experiment")),
            auth=svc.auth,
            limits=limits(svc),
            mode="asymmetric" if self.meta.get("passages") == "teacher" else "symmetric",
        )

    def ready_for(self, cfg: ServiceConfig) -> ReadyInfo:
        """/ready as served by an app whose `service.*` may differ from the engine's (auth, limits)."""
        return msgspec.structs.replace(self.ready_info, auth=cfg.auth, limits=limits(cfg))


def _length_limit(value: float | None) -> int:
    """The student's input limit in tokens for /ready; 0 = none (a static model reads whole texts)."""
    return int(value) if value and value != float("inf") else 0


def _align(tc: TeacherCorpus, index_docids: list[str], where: Path) -> np.ndarray:
    """The teacher's rows in index-row order; a corpus mismatch is an ArtifactError naming the fix."""
    pos = tc.positions
    missing = [d for d in index_docids if d not in pos]
    if missing:
        raise ArtifactError(
            f"{where}/docids.json lacks {len(missing)} of the index's passages (e.g. {missing[0]!r}; built from "
            f"another corpus?): {TEACHER_CORPUS_FIX}"
        )
    return np.ascontiguousarray(tc.emb[[pos[d] for d in index_docids]], dtype=np.float32)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
