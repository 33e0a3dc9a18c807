"""Load sentence-transformers bi- and cross-encoders by config name and encode with them.

A name goes through `kd.models.store.resolve` (packaged, local folder or hub id); load failures become a
`ModelLoadError` that says where the model was looked for and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd.atomic import atomic_dir
from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.models.runtime import autocast
from kd.models.store import PACKAGED, cross_encoder_module, resolve

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer


def _load_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        "HF_HUB_OFFLINE=1 is set and it is not in the local hub cache: run once with network access "
        "and HF_HUB_OFFLINE=0 to download it"
        if offline
        else "the hub could not be reached"
    )
    return ModelLoadError(
        f"could not load model '{name}' ({type(exc).__name__}: {str(exc)[:200]}). It is not a packaged "
        f"name ({', '.join(PACKAGED)}) nor a local folder, so it comes from the Hugging Face hub; {hint}."
    )


def load_bi_encoder(
    name: str, max_seq_length: int | None = None, device: str = "cpu", backend: str = "torch"
) -> SentenceTransformer:
    """A SentenceTransformer from `name` (a packaged name, a local folder or a hub id; see `resolve`).

    Args:
        name: the model to load.
        max_seq_length: truncate inputs at this many tokens (None keeps the model's own limit).
        device: torch device, e.g. "cpu".
        backend: sentence-transformers backend: "torch", "onnx" or "openvino".

    Raises:
        ModelLoadError: the model could not be loaded, with what to do about it.
    """
    from sentence_transformers import SentenceTransformer

    path = resolve(name)
    try:
        model = SentenceTransformer(path, device=device, backend=backend)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any load failure gets the same actionable message
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load model from {path}: {exc}") from exc
        raise _load_error(name, exc) from exc
    set_max_length(model, max_seq_length)
    return model


def embedding_dim(model: Any) -> int | None:
    """The width of a sentence-transformers model's embeddings (None when it cannot tell), by the name
    this sentence-transformers release has (`get_embedding_dimension`, formerly `get_sentence_embedding_dimension`)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get()
    return None if dim is None else int(dim)


def set_max_length(model: SentenceTransformer, max_seq_length: int | float | None) -> None:
    """Truncate inputs at `max_seq_length` tokens where the model has such a limit.

    A static-embedding model reads whole texts (its `max_seq_length` is infinite and read-only): nothing to set.
    """
    if not max_seq_length or max_seq_length == float("inf"):
        return
    prop = getattr(type(model[0]), "max_seq_length", None)
    if isinstance(prop, property) and prop.fset is None:
        return
    model.max_seq_length = int(max_seq_length)


def _stored_tensor_names(source: str) -> set[str] | None:
    """Tensor names in a checkpoint's weight files (headers only), or None when they cannot be read."""
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(source, "config.json")
        if not isinstance(config, str):
            return None
        folder = Path(config).parent
    names: set[str] = set()
    try:
        from safetensors import safe_open

        for f in [*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")]:
            with safe_open(str(f), "pt") as fh:
                names.update(fh.keys())
        if not names:
            import torch

            for f in folder.glob("pytorch_model*.bin"):
                names.update(torch.load(f, map_location="meta", weights_only=True))
    except Exception:  # noqa: BLE001 - unreadable files: the caller falls back to the config
        return None
    return names or None


def untrained_head(ce: CrossEncoder, source: str) -> list[str]:
    """The classification-head weights that the checkpoint at `source` does not hold.

    transformers fills such weights at random (it logs "newly initialized"), e.g. when an embedding
    model is loaded as a cross-encoder; its scores are then noise. Head = every parameter outside the
    base model (`classifier.*` for BERT, `classifier.dense/out_proj.*` for RoBERTa/XLM-R).
    """
    hf = cross_encoder_module(ce).auto_model
    prefix = f"{hf.base_model_prefix}."
    head = [k for k in hf.state_dict() if not k.startswith(prefix)]
    stored = _stored_tensor_names(source)
    if stored is None:  # cannot read the weights: trust a config that was saved from a classifier
        archs = hf.config.architectures or []
        return [] if any(a.endswith("ForSequenceClassification") for a in archs) else head
    return [k for k in head if k not in stored]


def load_cross_encoder(name: str, max_seq_length: int | None = None, device: str = "cpu") -> CrossEncoder:
    """Load a reranker; refuse one whose classification head is not in the checkpoint (random scores)."""
    from sentence_transformers import CrossEncoder

    path = resolve(name)
    try:
        model = CrossEncoder(path, device=device, max_length=max_seq_length)
    except Exception as exc:  # noqa: BLE001
        if Path(path).is_dir():
            raise ModelLoadError(f"could not load cross-encoder from {path}: {exc}") from exc
        raise _load_error(name, exc) from exc
    missing = untrained_head(model, path)
    if missing:
        raise ModelLoadError(
            f"teacher.model={name!r} has no trained cross-encoder head: {', '.join(missing)} are not in the "
            "checkpoint, so they would be initialised at random and every score would be noise (is it an "
            "embedding model?). Point teacher.model at a reranker checkpoint (a *ForSequenceClassification "
            "model, e.g. BAAI/bge-reranker-large, or the packaged stand-in tiny_cross_encoder), or use it as "
            "a bi-encoder with teacher.kind=bi_encoder."
        )
    labels = cross_encoder_module(model).auto_model.config.num_labels
    if labels not in (1, 2):
        raise ModelLoadError(
            f"teacher.model={name!r} has {labels} output labels; a reranker teacher needs one relevance "
            "logit (or two: not relevant / relevant). Use a reranking checkpoint."
        )
    return model


def save_prompts(model: SentenceTransformer, cfg: ModelConfig) -> None:
    """Keep the query/passage prefixes in the model (sentence-transformers `prompts`, saved with it)."""
    model.prompts = {"query": cfg.query_prefix, "passage": cfg.passage_prefix}


def check_prompts(model: SentenceTransformer, cfg: ModelConfig, where: str) -> None:
    """Refuse a student whose saved prompts differ from the config's prefixes (it would embed off-distribution).

    Models saved without prompts (packaged, or older checkpoints) pass: there is nothing to compare.
    """
    saved = getattr(model, "prompts", None) or {}
    for role, key in (("query", "query_prefix"), ("passage", "passage_prefix")):
        want = getattr(cfg, key)
        if role in saved and saved[role] != want:
            raise ModelLoadError(
                f"the student in {where} was trained with {role} prompt {saved[role]!r} but student.{key} is "
                f"{want!r}: set student.{key} to {saved[role]!r} (conf/student/), or retrain (`dvc repro train`)"
            )


def encode(
    model: SentenceTransformer,
    texts: list[str],
    prefix: str = "",
    batch_size: int = 32,
    progress: bool = False,
    dtype: str = "float32",
    normalize: bool = True,
) -> np.ndarray:
    """L2-normalised float32 embeddings, so inner product == cosine everywhere downstream.

    `dtype`: the model config's compute dtype (`kd.models.runtime.use_bf16`); the result is float32 either way.
    `normalize=False` returns the raw embeddings (the service's `POST /encode` offers both).
    """

    with autocast(dtype):
        emb = model.encode(
            [prefix + t for t in texts] if prefix else texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=normalize,
            show_progress_bar=progress,
        )
    return np.asarray(emb, dtype=np.float32)


def save_student(model: SentenceTransformer, cfg: ModelConfig, out_dir: Path) -> None:
    """Write the trained student as a sentence-transformers folder, atomically: at `student.max_seq_length`
    (whatever length it trained at), with its own prompts (checked when it loads, `check_prompts`), and no
    model card (it holds a timestamp: the same weights give the same files and the same DVC hash)."""
    set_max_length(model, cfg.max_seq_length)
    save_prompts(model, cfg)
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp), create_model_card=False)
