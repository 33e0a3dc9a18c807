"""What the student is trained on and against: the rows, the loss module, the projection.

`training_rows` turns the teacher's scored groups into the trainer's columns; `DistillLoss.forward` only
encodes, and the maths is `kd.distill.losses.combined`; `fit_projection` starts the map from the student's
space to the teacher's (`loss.embed` with a student of another width).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kd.config import LossConfig, ModelConfig
from kd.distill.losses import combined
from kd.errors import DataError
from kd.models.loading import encode

log = logging.getLogger(__name__)


class DistillLoss(nn.Module):
    """Encode query + group, hand the normalised embeddings to the pure loss; keep components."""

    def __init__(
        self,
        model: nn.Module,
        weights: LossConfig,
        projection: nn.Linear | None = None,
        teacher_passages: int | None = None,
    ) -> None:
        """`teacher_passages`: the group size when the passages are the teacher's own embeddings (carried in
        the labels, `training_rows(passages_from_teacher=True)`): the student then encodes queries only, as
        it will when serving asymmetrically (`index.passages=teacher`)."""
        super().__init__()
        self.model = model
        self.weights = weights
        self.projection = projection  # trained with the student (the trainer optimises the loss's parameters)
        self.teacher_passages = teacher_passages
        self.components: dict[str, list[float]] = {}

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        """The weighted distillation loss of one batch (`kd.distill.losses.combined`); records each component.

        Args:
            sentence_features: tokenised inputs, the queries first, then one entry per passage column
                (none when `teacher_passages` is set: the teacher's passage embeddings stand in).
            labels: [B, G] teacher scores, or [B, G + (1 + G) * T] with the teacher's query and G passage
                embeddings (width T) flattened after them (`training_rows`).

        Returns:
            The scalar total loss.
        """
        embs = [F.normalize(self.model(f)["sentence_embedding"], dim=-1) for f in sentence_features]
        q = embs[0]
        g = self.teacher_passages or len(embs) - 1
        labels = labels.to(q.dtype)
        t_q = t_p = None
        if labels.shape[1] > g:  # scores, then the teacher's query and passage embeddings (see training_rows)
            t = labels[:, g:].reshape(labels.shape[0], 1 + g, -1)
            t_q, t_p = t[:, 0], t[:, 1:]
        if self.teacher_passages:
            if t_p is None:
                raise ValueError("teacher_passages: the labels carry no teacher embeddings (training_rows)")
            p = t_p
        else:
            p = torch.stack(embs[1:], dim=1)
        batch_p, offset = gathered_passages(p)
        total, parts = combined(q, p, labels[:, :g], self.weights, t_q, t_p, self.projection, batch_p, offset,
                                student_passages=not self.teacher_passages)  # fmt: skip
        for k, v in parts.items():
            self.components.setdefault(k, []).append(v)
        self.components.setdefault("total", []).append(float(total.detach()))
        return total

    def drain(self) -> dict[str, float]:
        """Mean of each component since the last call (one logging window)."""
        out = {k: sum(v) / len(v) for k, v in self.components.items() if v}
        self.components = {}
        return out


def gathered_passages(p: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """Under data-parallel training, every rank's passages for the in-batch term, and this rank's offset.

    The gather keeps gradients for this rank's rows (sentence-transformers' `all_gather_with_grad`,
    as its MultipleNegativesRankingLoss does with `gather_across_devices`), so each worker's queries
    see the whole global batch as negatives, as one process with the global batch would. Outside
    DDP, or when ranks hold batches of different sizes (a short last batch), the term stays local.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None, 0
    from sentence_transformers.util import all_gather, all_gather_with_grad

    sizes = all_gather(torch.tensor([p.shape[0]], device=p.device))
    if bool((sizes != p.shape[0]).any()):
        return None, 0
    pos = all_gather_with_grad(p[:, 0].contiguous())
    neg = all_gather_with_grad(p[:, 1:].reshape(-1, p.shape[-1]).contiguous())
    return torch.cat([pos, neg]), dist.get_rank() * p.shape[0]


def training_rows(
    scores: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    student: ModelConfig,
    teacher_q: dict[str, np.ndarray] | None = None,
    teacher_p: Callable[[list[str]], np.ndarray] | None = None,
    passages_from_teacher: bool = False,
) -> dict[str, list[Any]]:
    """Teacher-scores parquet -> columns the trainer feeds to the loss (query, doc_0.., label).

    `label` holds the group's teacher scores; with `teacher_q` (qid -> the teacher's query embedding)
    and `teacher_p` (docids -> the teacher's passage rows) it also carries those embeddings, flattened
    after the scores, for the similarity-matrix terms. `passages_from_teacher`: no passage text columns
    (asymmetric training: the teacher's rows stand for the passages; `DistillLoss(teacher_passages=G)`).
    """
    if passages_from_teacher and (teacher_q is None or teacher_p is None):
        raise DataError("index.passages=teacher trains against the teacher's embeddings: teacher_q and teacher_p needed")
    if scores.empty:
        raise DataError(
            "artifacts/teacher_scores.parquet has no groups: no training query got candidates. "
            "Check data.max_train_queries and mining.depth, then `dvc repro teacher`."
        )
    size = len(scores["doc_ids"].iloc[0])
    cols: dict[str, list[Any]] = {"query": []}
    cols.update({f"doc_{i}": [] for i in range(0 if passages_from_teacher else size)})
    cols["label"] = []
    for qid, doc_ids, group_scores in zip(scores["qid"], scores["doc_ids"], scores["scores"]):
        ids = [str(d) for d in doc_ids]
        if len(ids) != size:
            raise DataError(f"teacher scores: group of {qid} has {len(ids)} docs, others {size}")
        cols["query"].append(student.query_prefix + query_text[str(qid)])
        for i, d in enumerate(ids if not passages_from_teacher else []):
            cols[f"doc_{i}"].append(student.passage_prefix + doc_text[d])
        label = [float(s) for s in group_scores]
        if teacher_q is not None and teacher_p is not None:
            label += np.concatenate([teacher_q[str(qid)][None, :], teacher_p(ids)]).astype(np.float32).ravel().tolist()
        cols["label"].append(label)
    return cols


def fit_projection(student: np.ndarray, teacher: np.ndarray) -> nn.Linear:
    """The least-squares linear map (with bias) from student to teacher embeddings of the same texts.

    `loss.embed` trains this map with the student; starting from a random one would make the first
    steps pull the student toward noise, and at the student's learning rate it would barely move.
    """
    if len(student) != len(teacher) or len(student) <= student.shape[1]:
        raise DataError(
            f"loss.embed: fitting the {student.shape[1]}->{teacher.shape[1]} projection needs more texts than "
            f"dimensions, got {len(student)}; lower loss.embed to 0 or use more training queries (data.max_train_queries)"
        )
    x = torch.from_numpy(np.hstack([student, np.ones((len(student), 1))]).astype(np.float64))
    w = torch.linalg.lstsq(x, torch.from_numpy(teacher.astype(np.float64))).solution  # [D_s + 1, D_t]
    proj = nn.Linear(student.shape[1], teacher.shape[1])
    with torch.no_grad():
        proj.weight.copy_(w[:-1].T.float())
        proj.bias.copy_(w[-1].float())
    return proj


PROJECTION_FIT_PASSAGES = 2000  # loss.embed: passages (beside all training queries) for the projection's start


def projection_start(
    model: Any,
    scores: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    teacher_q: dict[str, np.ndarray],
    teacher_rows: Callable[[list[str]], np.ndarray],
    student: ModelConfig,
    seed: int,
) -> nn.Linear:
    """`loss.embed`'s student->teacher map for a student of another width, started at the least-squares fit
    (`fit_projection`) over every training query and `PROJECTION_FIT_PASSAGES` of the training passages."""
    qids = sorted(set(scores["qid"].astype(str)))
    docids = sorted({str(d) for ids in scores["doc_ids"] for d in ids})
    docids = sorted(np.random.default_rng(seed).permutation(docids)[:PROJECTION_FIT_PASSAGES].tolist())
    texts = [student.query_prefix + query_text[q] for q in qids]
    texts += [student.passage_prefix + doc_text[d] for d in docids]
    log.info("loss.embed: fitting the projection on %d training texts", len(texts))
    s_emb = encode(model, texts, batch_size=student.batch_size, progress=True)
    t_emb = np.vstack([np.stack([teacher_q[q] for q in qids]), teacher_rows(docids)]).astype(np.float32)
    return fit_projection(s_emb, t_emb)
