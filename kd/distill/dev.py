"""The dev signal that keeps the best epoch: nDCG@10 of the student on the dev queries.

Over a pool that mimics the full corpus (judged + the top candidates of BM25, the untrained student and
the teacher: `dev_pool`), through sentence-transformers' InformationRetrievalEvaluator; or, for a student
that queries the teacher's passage matrix, over that whole matrix as it will be served. Test queries are
never seen here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd.config import ModelConfig, Params
from kd.data.io import Dataset
from kd.models.loading import encode, set_max_length
from kd.models.teacher import BiEncoderTeacher, CrossEncoderTeacher
from kd.retrieval.metrics import evaluate as evaluate_run
from kd.retrieval.metrics import read_trec
from kd.retrieval.search import teacher_run

if TYPE_CHECKING:
    from kd.models.teacher_corpus import TeacherCorpus

VAL_METRIC = "dev_cosine_ndcg@10"



def dev_evaluator(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    corpus_text: dict[str, str],
    student: ModelConfig,
) -> Any:
    """Dev-pool nDCG@10 of the model as it will be served: at `student.max_seq_length`, whatever length
    it trains at (`train.max_seq_length`), so the kept epoch and the WiSE-FT curve score the shipped model."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    class AtServedLength(InformationRetrievalEvaluator):  # type: ignore[misc]
        """sentence-transformers' IR evaluator at the served `student.max_seq_length` (training length restored after)."""

        def __call__(self, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            trained_at = model.max_seq_length
            set_max_length(model, student.max_seq_length)
            try:
                return dict(super().__call__(model, *args, **kwargs))
            finally:
                set_max_length(model, trained_at)

    relevant = {q: {d for d, r in docs.items() if r > 0} for q, docs in qrels.items() if q in queries}
    return AtServedLength(
        queries={q: queries[q] for q in relevant},
        corpus=corpus_text,
        relevant_docs=relevant,
        name="dev",
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10],
        map_at_k=[10],
        show_progress_bar=False,
        batch_size=student.batch_size,
        query_prompt=student.query_prefix or None,
        corpus_prompt=student.passage_prefix or None,
        score_functions={"cosine": cos_sim},
        main_score_function="cosine",
    )



def teacher_index_evaluator(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    view: Any,
    student: ModelConfig,
) -> Any:
    """Dev nDCG@10 of the student's queries against the teacher's passage matrix over the whole corpus:
    the asymmetric system exactly as `evaluate` and the service run it (`index.passages=teacher`).

    `view`: a `kd.models.teacher_corpus.TeacherCorpus`; exact inner-product search (the corpus is small enough
    for a matrix product per dev pass). Returns the same key as `dev_evaluator`, so the trainer keeps the
    best epoch and WiSE-FT scores its mixes the same way.
    """
    from sentence_transformers.evaluation import SentenceEvaluator

    qids = sorted(q for q in queries if any(r > 0 for r in qrels.get(q, {}).values()))

    class TeacherIndex(SentenceEvaluator):  # type: ignore[misc]
        """Encodes the dev queries at the served length and scores exact top-10 search of `view` by nDCG@10."""

        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = VAL_METRIC
            self.greater_is_better = True

        def __call__(self, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            trained_at = model.max_seq_length
            set_max_length(model, student.max_seq_length)
            try:
                emb = encode(model, [queries[q] for q in qids], student.query_prefix, student.batch_size)
            finally:
                set_max_length(model, trained_at)
            hits = view.top_k(emb, 10)
            run = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
            return {VAL_METRIC: float(evaluate_run({q: qrels[q] for q in qids}, run)["nDCG@10"])}

    return TeacherIndex()


def dev_setup(
    p: Params,
    ds: Dataset,
    doc_text: dict[str, str],
    teacher: BiEncoderTeacher | CrossEncoderTeacher,
    view: TeacherCorpus | None,
    pool_run_files: Sequence[Path],
) -> tuple[Any, int]:
    """The evaluator that keeps the best epoch, and how many passages it searches.

    Asymmetric (`index.passages=teacher`): the student's queries against the teacher's whole matrix, as
    served. A static student: the whole corpus (its pass takes seconds), as `evaluate` scores it. Else a
    pool that mimics the full corpus: the judged passages plus the top `train.val_depth` of each run in
    the TREC runs in `pool_run_files` (BM25's and the untrained student's) and of the teacher's own search when it has a matrix.
    """
    queries, qrels = ds.queries["dev"], ds.qrels["dev"]
    if p.index.passages == "teacher":
        assert view is not None  # config check: index.passages=teacher needs a bi-encoder teacher
        return teacher_index_evaluator(queries, qrels, view, p.student), len(view.docids)
    if p.student.kind == "static":
        return dev_evaluator(queries, qrels, doc_text, p.student), len(doc_text)
    docs = {d for judged in qrels.values() for d in judged}
    runs = [read_trec(path) for path in pool_run_files]
    if view is not None and isinstance(teacher, BiEncoderTeacher):
        qids = sorted(queries)
        t_emb = dict(zip(qids, teacher.encode_queries([queries[q] for q in qids])))
        runs.append(teacher_run(t_emb, view, p.train.val_depth))
    for run in runs:
        for ranked in run.values():
            docs |= set(sorted(ranked, key=lambda d: -ranked[d])[: p.train.val_depth])
    return dev_evaluator(queries, qrels, {d: doc_text[d] for d in sorted(docs)}, p.student), len(docs)
