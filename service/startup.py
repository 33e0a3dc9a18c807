"""Starting the service: the cheap artifact checks, then every model, index and matrix loaded once into
an `Engine`. Run before uvicorn starts (`service.__main__`), so a missing file ends the process with one
clear line naming the `dvc repro` stage that writes it, not a traceback from inside the ASGI lifespan.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kd.errors import ArtifactError, ModelLoadError
from service.engine import TEACHER_CORPUS_FIX, Engine
from service.schemas import RegistryInfo
from service.settings import Settings, check_service_config

if TYPE_CHECKING:
    from kd.models.teacher_corpus import TeacherCorpus

log = logging.getLogger("service")

INDEX_FILES = ("faiss.index", "docids.json", "passages.jsonl", "meta.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TRAIN_FIX = "run `dvc repro train` (or `dvc pull`) to rebuild it"
INDEX_FIX = "run `dvc repro index` (or `dvc pull`) to rebuild it"


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


def load_teacher_corpus(settings: Settings) -> TeacherCorpus | None:
    """The bi-encoder teacher's passage embeddings, or None (pair scoring) when absent or a cross-encoder's."""
    from kd.models import teacher_corpus

    where = settings.teacher_corpus_path
    if settings.params.teacher.kind != "bi_encoder":
        return None
    if not (where / teacher_corpus.META).is_file():
        log.warning("no teacher passage embeddings in %s: reranking scores pairs (slow); %s", where, TEACHER_CORPUS_FIX)
        return None
    try:
        meta = json.loads((where / teacher_corpus.META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where / teacher_corpus.META} is unreadable ({exc}): {TEACHER_CORPUS_FIX}") from exc
    if meta.get("kind", "bi_encoder") != "bi_encoder" or not meta.get("count"):
        return None
    if meta.get("model") != settings.params.teacher.model:
        raise ArtifactError(
            f"{where / teacher_corpus.META} was made by teacher {meta.get('model')!r} but teacher.model is "
            f"{settings.params.teacher.model!r}: {TEACHER_CORPUS_FIX}"
        )
    try:
        return teacher_corpus.load(where)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{where} is unreadable ({exc}): {TEACHER_CORPUS_FIX}") from exc


def resolve_student(settings: Settings) -> tuple[Path, RegistryInfo | None]:
    """The student folder: the DVC one, or a registry version downloaded into the cache."""
    uri = settings.registry_uri
    if not uri:
        return settings.student_dir, None
    from kd.paths import cache_dir, mlflow_uri
    from service.registry import fetch

    return fetch(uri, cache_dir() / "registry", mlflow_uri())


def load_engine(settings: Settings) -> Engine:
    """Validate, then load everything once. Every failure is a KDError whose message names the fix."""
    from kd.models.backends import load_student
    from kd.models.loading import check_prompts, embedding_dim
    from kd.models.runtime import configure_threads
    from kd.models.teacher import load_teacher
    from kd.retrieval import index as kd_index

    check_service_config(settings.service)
    student_dir, registry = resolve_student(settings)
    validate_artifacts(student_dir, settings.index_dir)
    configure_threads(settings.params.service.threads)
    index = kd_index.load(settings.index_dir)
    try:
        student = load_student(student_dir, settings.params.student.backend, settings.params.student.max_seq_length)
        check_prompts(student, settings.params.student, str(student_dir))
    except ModelLoadError as exc:
        raise ArtifactError(f"{exc}: {TRAIN_FIX}") from exc
    dim = embedding_dim(student)
    if dim is not None and dim != index.index.d:
        raise ArtifactError(
            f"{settings.index_dir / 'faiss.index'} holds {index.index.d}-d vectors but the student in "
            f"{student_dir} makes {dim}-d ones (index built from another student): {INDEX_FIX}"
        )
    teacher = None
    corpus = None
    if settings.rerank_enabled:
        try:
            teacher = load_teacher(settings.params.teacher)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"teacher for reranking: {exc} (or start without it: --no-rerank / service.rerank=false)"
            ) from exc
        corpus = load_teacher_corpus(settings)
    return Engine(settings, student, index, teacher, corpus, registry)
