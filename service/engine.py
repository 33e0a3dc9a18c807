"""What the service serves, with no HTTP in it: settings, artifact checks, and the search itself.

Kept apart from `service.app` so the process entry point can load (and so validate) everything
*before* uvicorn starts — a missing file then ends the process with one clear line, not a traceback
from inside the ASGI lifespan — and so the search logic can be tested without a server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd.backends import OnnxQueryEncoder
from kd.config import Params, ServiceConfig
from kd.data.io import passage_text
from kd.errors import ArtifactError, ModelLoadError
from kd.index import LoadedIndex
from service.schemas import Limits, ReadyInfo, StudentInfo, TeacherInfo

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from kd.models import Teacher

INDEX_FILES = ("faiss.index", "docids.json", "passages.jsonl", "meta.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TRAIN_FIX = "run `dvc repro train` (or `dvc pull`) to rebuild it"
INDEX_FIX = "run `dvc repro index` (or `dvc pull`) to rebuild it"


@dataclass(frozen=True)
class Settings:
    """Where the artifacts are and which params apply. `rerank=None` defers to `service.rerank`."""

    student_dir: Path = Path("artifacts/student")
    index_dir: Path = Path("artifacts/index")
    params: Params = field(default_factory=Params)
    rerank: bool | None = None

    @property
    def service(self) -> ServiceConfig:
        return self.params.service

    @property
    def rerank_enabled(self) -> bool:
        return self.params.service.rerank if self.rerank is None else self.rerank


def validate_artifacts(student_dir: Path, index_dir: Path) -> None:
    """Cheap presence checks (no model or index load), so a missing DVC out fails in milliseconds.

    Raises ArtifactError naming the file and the `dvc repro` stage that writes it. Corruption that
    only a load can reveal is reported by `load_engine` the same way.
    """
    if not student_dir.is_dir():
        raise ArtifactError(f"student model folder {student_dir} is missing: {TRAIN_FIX}")
    modules = student_dir / "modules.json"
    if not modules.is_file():
        raise ArtifactError(f"{modules} is missing (not a sentence-transformers folder): {TRAIN_FIX}")
    try:
        entries = json.loads(modules.read_text())
        paths = [str(e.get("path", "")) for e in entries if str(e.get("type", "")).endswith("Transformer")]
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise ArtifactError(f"{modules} is corrupt ({exc}): {TRAIN_FIX}") from exc
    for sub in paths:
        folder = student_dir / sub
        if not (folder / "config.json").is_file():
            raise ArtifactError(f"{folder / 'config.json'} is missing: {TRAIN_FIX}")
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            raise ArtifactError(f"{folder / WEIGHT_FILES[0]} is missing (no model weights): {TRAIN_FIX}")
    if not index_dir.is_dir():
        raise ArtifactError(f"index folder {index_dir} is missing: {INDEX_FIX}")
    for name in INDEX_FILES:
        if not (index_dir / name).is_file():
            raise ArtifactError(f"{index_dir / name} is missing: {INDEX_FIX}")


class Engine:
    """The loaded student, FAISS index, id map, passage store and optional teacher.

    Model calls are serialised with a lock per model: a Hugging Face fast tokenizer is not safe to
    call from several threads at once ("Already borrowed"), and on a few CPU cores concurrent forward
    passes only fight over the same cores. FAISS searches on an immutable index need no lock.
    """

    def __init__(
        self,
        settings: Settings,
        student: SentenceTransformer,
        index: LoadedIndex,
        teacher: Teacher | None,
    ) -> None:
        self.settings = settings
        self.student = student
        self.faiss = index.index
        self.docids = index.docids
        self.passages = index.passages
        self.meta = index.meta
        self.teacher = teacher
        self.query_prefix = settings.params.student.query_prefix
        self.corpus_size = int(self.faiss.ntotal)
        self._fast_encode = OnnxQueryEncoder.from_model(student)  # None: torch backend, use encode()
        self._student_lock = threading.Lock()
        self._teacher_lock = threading.Lock()
        self.ready_info = self._ready_info()

    @property
    def rerank_available(self) -> bool:
        return self.teacher is not None

    def encode(self, queries: list[str]) -> np.ndarray:
        """L2-normalised float32 query embeddings, all queries in one forward pass."""
        texts = [self.query_prefix + q for q in queries] if self.query_prefix else queries
        with self._student_lock:
            if self._fast_encode is not None:
                return self._fast_encode(texts)
            emb = self.student.encode(
                texts,
                batch_size=max(len(texts), 1),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def search(
        self, queries: list[str], k: int, rerank: bool = False, rerank_depth: int = 0
    ) -> list[list[tuple[int, float]]]:
        """Per query, `(row, score)` best first: student cosine, or teacher score when reranking."""
        emb = self.encode(queries)
        depth = min(rerank_depth if rerank else k, self.corpus_size)
        scores, rows = self.faiss.search(emb, depth)
        hits = [
            [(int(r), float(s)) for r, s in zip(row_ids, row_scores, strict=True) if r >= 0]
            for row_ids, row_scores in zip(rows, scores, strict=True)
        ]
        if not rerank:
            return hits
        return self._rerank(queries, hits, k)

    def _rerank(self, queries: list[str], hits: list[list[tuple[int, float]]], k: int) -> list[list[tuple[int, float]]]:
        if self.teacher is None:
            raise RuntimeError("rerank requested but no teacher is loaded")
        pair_queries = [q for q, h in zip(queries, hits, strict=True) for _ in h]
        pair_passages = [passage_text(self.passages[r]) for h in hits for r, _ in h]
        with self._teacher_lock:
            teacher_scores = self.teacher.score(pair_queries, pair_passages) if pair_queries else np.zeros(0)
        out: list[list[tuple[int, float]]] = []
        start = 0
        for h in hits:
            rows = [r for r, _ in h]
            scores = teacher_scores[start : start + len(h)]
            start += len(h)
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(rows[i], float(scores[i])) for i in order])
        return out

    def warm_up(self) -> None:
        """One real search (and teacher score) at startup, so the first request does not pay for lazy init."""
        self.search(["warm up"], 1)
        if self.teacher is not None:
            self.search(["warm up"], 1, rerank=True, rerank_depth=1)

    def _ready_info(self) -> ReadyInfo:
        params, svc = self.settings.params, self.settings.service
        index_meta = dict(self.meta.get("index") or {})
        index_meta.setdefault("type", params.index.type)
        index_meta["faiss_class"] = type(self.faiss).__name__
        index_meta["dim"] = int(self.faiss.d)
        if hasattr(self.faiss, "hnsw"):
            index_meta["ef_search_live"] = int(self.faiss.hnsw.efSearch)
        teacher = None
        if self.teacher is not None:
            cfg = params.teacher
            teacher = TeacherInfo(name=cfg.name, model=cfg.model, kind=cfg.kind)
        student_meta = self.meta.get("student")
        name = student_meta if isinstance(student_meta, str) else params.student.name
        if isinstance(student_meta, dict):
            name = str(student_meta.get("name", name))
        return ReadyInfo(
            status="ready",
            student=StudentInfo(
                name=name,
                path=str(self.settings.student_dir),
                max_seq_length=int(self.student.max_seq_length or 0),
                embedding_dim=int(self.faiss.d),
                query_prefix=self.query_prefix,
            ),
            teacher=teacher,
            rerank_available=self.rerank_available,
            corpus_size=self.corpus_size,
            index=index_meta,
            git_commit=_opt_str(self.meta.get("git_commit")),
            dvc_experiment=_opt_str(self.meta.get("dvc_experiment")),
            limits=Limits(
                max_query_chars=svc.max_query_chars,
                max_k=svc.max_k,
                max_rerank_depth=svc.max_rerank_depth,
                max_batch=svc.max_batch,
                max_body_bytes=svc.max_body_bytes,
            ),
            meta=self.meta,
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_engine(settings: Settings) -> Engine:
    """Validate, then load everything once. Every failure is a KDError whose message names the fix."""
    from kd import index as kd_index
    from kd.backends import configure_threads, load_student
    from kd.models import load_teacher

    validate_artifacts(settings.student_dir, settings.index_dir)
    configure_threads(settings.params.service.threads)
    index = kd_index.load(settings.index_dir)
    try:
        student = load_student(
            settings.student_dir, settings.params.student.backend, settings.params.student.max_seq_length
        )
    except ModelLoadError as exc:
        raise ArtifactError(f"{exc}: {TRAIN_FIX}") from exc
    get_dim = getattr(student, "get_embedding_dimension", None) or student.get_sentence_embedding_dimension
    dim = get_dim()
    if dim is not None and dim != index.index.d:
        raise ArtifactError(
            f"{settings.index_dir / 'faiss.index'} holds {index.index.d}-d vectors but the student in "
            f"{settings.student_dir} makes {dim}-d ones (index built from another student): {INDEX_FIX}"
        )
    teacher = None
    if settings.rerank_enabled:
        try:
            teacher = load_teacher(settings.params.teacher)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"teacher for reranking: {exc} (or start without it: --no-rerank / service.rerank=false)"
            ) from exc
    return Engine(settings, student, index, teacher)
