"""What stage `train` reads before it trains: the corpus, the teacher (and its passage matrix when it has
one), the teacher's scores per training group and, where a loss term or the serving mode needs them, the
teacher's query embeddings; assembled into the trainer's rows (`kd.distill.objective.training_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kd.artifacts import require
from kd.config import Params
from kd.data.io import Dataset, judged, passage_text, read_dataset
from kd.distill.corpus_fit import fit_to_teacher_matrix
from kd.distill.objective import projection_start, training_rows
from kd.models.loading import embedding_dim
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher, load_with_matrix

if TYPE_CHECKING:
    from torch import nn

    from kd.models.teacher_corpus import TeacherCorpus


@dataclass
class TrainingInputs:
    """The training data of one run; `rows` are the trainer's columns (query, doc_0.., label)."""

    ds: Dataset
    doc_text: dict[str, str]
    query_text: dict[str, str]
    teacher: BiEncoderTeacher | CrossEncoderTeacher
    view: TeacherCorpus | None  # the teacher's passage matrix (a bi-encoder teacher only)
    scores: pd.DataFrame  # the teacher-scores parquet: qid, doc_ids, scores per group
    teacher_q: dict[str, np.ndarray] | None  # qid -> the teacher's query embedding, where needed
    rows: dict[str, list[Any]]
    asymmetric: bool  # index.passages=teacher: the student will query the teacher's passage matrix

    @property
    def groups(self) -> int:
        return len(self.rows["query"])

    @property
    def judged(self) -> set[str]:
        """Passages judged for dev or test: never a training target."""
        return judged(self.ds.qrels)

    @property
    def teacher_group_size(self) -> int | None:
        """Asymmetric training reads each group's passages as the teacher's rows: the group size; else None."""
        return len(self.scores["doc_ids"].iloc[0]) if self.asymmetric else None

    def fit_corpus(
        self, model: Any, p: Params, learning_rate: float, seed: int, work: Path, on_metric: Callable[..., None]
    ) -> list[float]:
        """`train.corpus_epochs` epochs toward the teacher's row of every unjudged passage, before the ranking
        training (`kd.distill.corpus_fit`; none at 0). Each epoch's loss goes to
        `on_metric("corpus_fit_loss", loss, epoch)`; returns the losses."""
        if not p.train.corpus_epochs:
            return []
        losses = fit_to_teacher_matrix(
            model, self.view, self.judged, self.doc_text, p.train.corpus_epochs, learning_rate, p.train.batch_size,
            p.train.max_seq_length, seed, p.student.passage_prefix, work,
        )  # fmt: skip
        for epoch, value in enumerate(losses, start=1):
            on_metric("corpus_fit_loss", value, epoch)
        return losses

    def projection(self, model: Any, p: Params) -> nn.Linear | None:
        """`loss.embed`'s student->teacher map when the widths differ (started at the least-squares fit); else None."""
        if not p.loss.embed or self.teacher_q is None or self.view is None:
            return None
        if embedding_dim(model) == self.view.emb.shape[1]:
            return None  # a student made from the teacher: its space already
        return projection_start(model, self.scores, self.query_text, self.doc_text, self.teacher_q, self.view.rows,
                                p.student, p.seed)  # fmt: skip


def load_training_inputs(
    p: Params, data_dir: Path, scores: Path, negatives: Path, teacher_matrix: Path
) -> TrainingInputs:
    """Read the stage's inputs; a missing upstream output names the stage that writes it."""
    require(scores, "teacher")
    require(negatives, "negatives")
    ds = read_dataset(data_dir)
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    neg = pd.read_parquet(negatives, columns=["qid", "query", "teacher_q"])
    query_text = dict(zip(neg["qid"], neg["query"]))
    teacher, view = load_with_matrix(p.teacher, teacher_matrix, sorted(ds.corpus))
    asymmetric = p.index.passages == "teacher"
    teacher_q = None
    if p.loss.sim_kl or p.loss.sim_mse or p.loss.embed or asymmetric:  # these need the teacher's embeddings
        teacher_q = {q: np.asarray(e, dtype=np.float32) for q, e in zip(neg["qid"], neg["teacher_q"])}
    teacher_p = view.rows if view is not None and teacher_q is not None else None
    score_frame = pd.read_parquet(scores)
    rows = training_rows(
        score_frame, query_text, doc_text, p.student, teacher_q, teacher_p, passages_from_teacher=asymmetric
    )
    return TrainingInputs(ds, doc_text, query_text, teacher, view, score_frame, teacher_q, rows, asymmetric)
