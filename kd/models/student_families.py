"""The untrained starting point of each student family, built once: a checkpoint as it is, a checkpoint
cut to some of its transformer layers (`student.layers`), or a static token-embedding table distilled
from a checkpoint (`student.kind=static`). Each is an ordinary sentence-transformers folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd.atomic import atomic_dir
from kd.choices import check_layers
from kd.config import ModelConfig
from kd.errors import ConfigError, ModelLoadError
from kd.models.loading import load_bi_encoder
from kd.models.store import MODEL_CACHE, model_fingerprint, resolve

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


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
