"""Load sentence-transformers bi- and cross-encoders by config name and encode with them.

A name goes through `kd.models.store.resolve` (packaged, local folder or hub id); load failures become a
`ModelLoadError` that says where the model was looked for and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kd.atomic import atomic_dir
from kd.config import ModelConfig, check_layers
from kd.errors import ConfigError, ModelLoadError
from kd.models.runtime import autocast
from kd.models.store import MODEL_CACHE, PACKAGED, cross_encoder_module, model_fingerprint, resolve

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


def transformer_layers(model: SentenceTransformer) -> Any:
    """The `nn.ModuleList` of transformer blocks inside a sentence-transformers model (BERT, MPNet, RoBERTa...)."""
    hf = getattr(model[0], "auto_model", None)
    encoder = getattr(hf, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None:
        raise ModelLoadError(
            f"student.layers: {type(hf).__name__} has no encoder.layer list to cut; use a BERT/MPNet/RoBERTa-style "
            "checkpoint or set student.layers=null"
        )
    return blocks


def cut_layers(model: SentenceTransformer, layers: list[int]) -> SentenceTransformer:
    """Keep only the transformer blocks `layers` (in order), in place: a smaller model in the same space.

    Layer-reduction distillation (DistilBERT, Sanh et al. 2019; sentence-transformers'
    model_distillation_layer_reduction example): the student starts as a subset of a trained
    checkpoint's layers, with its tokenizer, embeddings and pooling, and learns to reproduce it.

    Args:
        model: a loaded sentence-transformers bi-encoder (its first module a `Transformer`).
        layers: indices into its blocks, strictly increasing (`kd.config.check_layers`).

    Example:
        >>> cut_layers(load_bi_encoder("mpnet"), [0, 4, 8, 11])  # 4 of 12 layers
    """
    from torch import nn

    check_layers(layers)
    blocks = transformer_layers(model)
    if layers[-1] >= len(blocks):
        raise ConfigError(
            f"student.layers={layers} names layer {layers[-1]}, but the checkpoint has {len(blocks)} "
            f"(0-{len(blocks) - 1}): list layers below {len(blocks)} (conf/student/)"
        )
    hf: Any = model[0].auto_model
    hf.encoder.layer = nn.ModuleList([blocks[i] for i in layers])
    hf.config.num_hidden_layers = len(layers)
    return model


def check_layers_exist(cfg: ModelConfig) -> None:
    """Refuse `student.layers` beyond the checkpoint's depth from its config.json alone (no weights loaded),
    so a bad index fails before the long passes; a hub checkpoint not on disk is checked when it loads."""
    if not cfg.layers or cfg.kind == "static":
        return
    config = Path(resolve(cfg.model)) / "config.json"
    if not config.is_file():
        return
    depth = json.loads(config.read_text()).get("num_hidden_layers")
    if isinstance(depth, int) and cfg.layers[-1] >= depth:
        raise ConfigError(
            f"student.layers={cfg.layers} names layer {cfg.layers[-1]}, but {cfg.model} has {depth} "
            f"(0-{depth - 1}): list layers below {depth} (conf/student/)"
        )


def static_from(source: str, dim: int | None) -> SentenceTransformer:
    """A static-embedding model distilled from `source`: its tokenizer's vocabulary, encoded once.

    Model2Vec's distillation (Tulkens & van Dongen, 2024), through sentence-transformers'
    `StaticEmbedding.from_distillation`: every vocabulary token goes through `source`, the output
    vectors are PCA-reduced to `dim` (None keeps the source's width, and its space) and weighted by
    model2vec's frequency prior (SIF);
    the model is the table, mean-pooled. An ordinary sentence-transformers model once saved.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    path = resolve(source)
    try:
        static = StaticEmbedding.from_distillation(path, device="cpu", pca_dims=dim)
    except ImportError as exc:
        raise ModelLoadError(f"student.kind=static needs model2vec: run `pip install -e .` ({exc})") from exc
    return SentenceTransformer(modules=[static], device="cpu")


def initial_student(cfg: ModelConfig) -> str:
    """The untrained student as a local folder (or a hub id): what `baseline` encodes and `train` starts from.

    A plain checkpoint (`student.layers` null, kind bi_encoder) is `student.model` itself. A cut checkpoint
    or a static table is built once into `.cache/models/students/` under a name that holds the source's
    content hash and the family's keys, so a changed source or key builds anew; written atomically.
    """
    if cfg.kind != "static" and cfg.layers is None:
        return resolve(cfg.model)
    source = Path(resolve(cfg.model))
    content = model_fingerprint(source)[:12] if source.is_dir() else str(cfg.model).replace("/", "--")
    if cfg.kind == "static":
        name = f"static-{Path(cfg.model).name}-{cfg.dim or 'full'}-{content}"
    else:
        name = f"cut-{Path(cfg.model).name}-L{'_'.join(map(str, cfg.layers or []))}-{content}"
    target = MODEL_CACHE / "students" / name
    if (target / "modules.json").exists():
        return str(target)
    if cfg.kind == "static":
        model = static_from(cfg.model, cfg.dim)
    else:
        model = cut_layers(load_bi_encoder(cfg.model), list(cfg.layers or []))
    with atomic_dir(target) as tmp:
        model.save(str(tmp), create_model_card=False)
    return str(target)


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
