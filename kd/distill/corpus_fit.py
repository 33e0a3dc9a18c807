"""Embedding distillation over the corpus: the student learns the teacher's embedding of each passage.

Before the ranking training, `train.corpus_epochs` epochs over every corpus passage not judged for dev
or test, each paired with its row of the teacher's passage matrix (stage `teacher_corpus`: the targets
already exist, nothing is encoded by the teacher again). This is Tokenlearn's recipe for static
embeddings (a table trained to reproduce a transformer's embeddings of real text) and the embedding
term of sentence-transformers' model-distillation example, applied to a student in the teacher's space
(same width: a static table distilled from the teacher, or some of the teacher's layers).

Reference: Tulkens & van Dongen, Model2Vec / Tokenlearn (2024); Reimers & Gurevych, "Making Monolingual
Sentence Embeddings Multilingual using Knowledge Distillation" (EMNLP 2020), the MSE-to-teacher objective.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kd.distill.losses import embed_cosine
from kd.errors import ConfigError
from kd.models.loading import embedding_dim, set_max_length

log = logging.getLogger(__name__)


class EmbedLoss(nn.Module):
    """1 - cosine between the student's embedding of each text and the teacher's (the label row).

    `forward` only encodes; the maths is `kd.distill.losses.embed_cosine`.

    Args (forward):
        sentence_features: one tokenised column of B texts.
        labels: [B, D] the teacher's L2-normalised embeddings of the same texts.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        """The mean (1 - cosine) of the batch."""
        features = next(iter(sentence_features))
        student = F.normalize(self.model(features)["sentence_embedding"], dim=-1)
        return embed_cosine(student, labels.to(student.dtype))


def corpus_targets(
    docids: list[str], judged: set[str], texts: dict[str, str], rows: np.ndarray, prefix: str = ""
) -> tuple[list[str], np.ndarray]:
    """The training pairs: each passage not in `judged`, with its teacher row.

    Args:
        docids: the matrix's docids, in row order.
        judged: passages judged for dev or test (kept out of training).
        texts: docid -> passage text.
        rows: [len(docids), D] the teacher's passage matrix.
        prefix: the student's passage prefix.

    Returns:
        (texts, [n, D] float32 targets) for the n passages kept.
    """
    keep = [i for i, d in enumerate(docids) if d not in judged]
    return [prefix + texts[docids[i]] for i in keep], np.asarray(rows[keep], dtype=np.float32)


def fit_corpus(
    model: Any,
    texts: list[str],
    targets: np.ndarray,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    work_dir: Path,
) -> list[float]:
    """Train `model` in place on (text, teacher embedding) pairs; return the mean loss of each epoch.

    Raises:
        ConfigError: the student's width differs from the teacher's (`train.corpus_epochs` compares
            embeddings directly, with no projection).
    """
    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback, set_seed

    from kd.distill.train import seeded_trainer

    width = embedding_dim(model)
    if targets.ndim != 2 or targets.shape[1] != width:
        raise ConfigError(
            f"train.corpus_epochs needs a student as wide as the teacher ({targets.shape[-1]}), got {width}: "
            "use a student made from the teacher (student=static with student.dim null, or student.layers "
            "of the teacher's checkpoint), or set train.corpus_epochs=0"
        )
    set_seed(seed)
    set_max_length(model, max_seq_length)
    losses: list[list[float]] = []

    class EpochLoss(TrainerCallback):  # type: ignore[misc]
        """Collects the logged losses per epoch."""

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            losses.append([])

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs and losses:
                losses[-1].append(float(logs["loss"]))

    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_ratio=0.1,
        logging_steps=max(1, len(texts) // batch_size // 10),
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=0,
    )
    data = HFDataset.from_dict({"text": texts, "label": targets.tolist()})
    trainer = seeded_trainer()(model=model, args=args, train_dataset=data, loss=EmbedLoss(model), callbacks=[EpochLoss()])
    trainer.train()
    return [float(np.mean(v)) if v else float("nan") for v in losses]


def fit_to_teacher_matrix(
    model: Any,
    view: Any,
    judged: set[str],
    doc_text: dict[str, str],
    epochs: int,
    learning_rate: float,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    passage_prefix: str,
    work: Path,
) -> list[float]:
    """`train.corpus_epochs` epochs toward the teacher's row of every passage not in `judged` (dev/test).

    `view` is the teacher's passage matrix (`kd.models.teacher_corpus.TeacherCorpus`); None is a config
    error naming the key. Returns the loss of each epoch.
    """
    if view is None:
        raise ConfigError(f"train.corpus_epochs={epochs} needs the teacher's passage matrix: "
                          "a bi-encoder teacher (conf/teacher/), or train.corpus_epochs=0")  # fmt: skip
    texts, targets = corpus_targets(view.docids, judged, doc_text, view.emb, passage_prefix)
    log.info("train.corpus_epochs=%d over %d passages (%d judged for dev/test left out)",
             epochs, len(texts), len(view.docids) - len(texts))  # fmt: skip
    return fit_corpus(model, texts, targets, epochs, learning_rate, batch_size, max_seq_length, seed, work)
