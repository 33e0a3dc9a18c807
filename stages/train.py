"""Stage `train`: the student learns the teacher's scores (and, with a bi-encoder teacher, its
in-batch similarity matrix); the best epoch by dev nDCG@10 over a pool is kept."""

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from kd import artifacts, tracking
from kd.atomic import write_text
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.distill.corpus_fit import fit_to_teacher_matrix
from kd.distill.dev import VAL_METRIC, dev_setup
from kd.distill.objective import projection_start, training_rows
from kd.distill.train import train as fit
from kd.errors import DataError
from kd.models import teacher_corpus
from kd.models.loading import initial_student, load_bi_encoder, save_student
from kd.models.runtime import use_bf16
from kd.models.teacher import BiEncoderTeacher, load_teacher
from kd.paths import cache_dir

SCORES = artifacts.TEACHER_SCORES
NEGATIVES = artifacts.NEGATIVES
TEACHER_CORPUS = artifacts.TEACHER_CORPUS
STUDENT = artifacts.STUDENT
CURVES = artifacts.TRAIN
DEV_POOL_RUNS = (artifacts.bm25_run("dev"), artifacts.baseline_run("dev"))


def main(p: Params) -> None:
    for need, stage in ((SCORES, "teacher"), (NEGATIVES, "negatives")):
        if not need.exists():
            raise DataError(f"{need} not found: run `dvc repro {stage}` first")
    ds = read_dataset(Path("data"))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    negatives = pd.read_parquet(NEGATIVES, columns=["qid", "query", "teacher_q"])
    query_text = dict(zip(negatives["qid"], negatives["query"]))
    teacher = load_teacher(p.teacher)
    view = None
    if isinstance(teacher, BiEncoderTeacher):
        view = teacher_corpus.load(TEACHER_CORPUS, expect_docids=sorted(ds.corpus))
    asymmetric = p.index.passages == "teacher"  # the student will query the teacher's passage matrix
    teacher_q = None
    if p.loss.sim_kl or p.loss.sim_mse or p.loss.embed or asymmetric:  # these need the teacher's embeddings
        teacher_q = {q: np.asarray(e, dtype=np.float32) for q, e in zip(negatives["qid"], negatives["teacher_q"])}
    teacher_p = view.rows if view is not None and teacher_q is not None else None
    scores = pd.read_parquet(SCORES)
    rows = training_rows(scores, query_text, doc_text, p.student, teacher_q, teacher_p, passages_from_teacher=asymmetric)

    evaluator, dev_pool_size = dev_setup(p, ds, doc_text, teacher, view, DEV_POOL_RUNS)
    model = load_bi_encoder(initial_student(p.student), p.train.max_seq_length)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # for train.interpolate (WiSE-FT)
    projection = None
    same_width = view is not None and model.get_sentence_embedding_dimension() == view.emb.shape[1]
    if p.loss.embed and teacher_q is not None and view is not None and not same_width:
        projection = projection_start(model, scores, query_text, doc_text, teacher_q, view.rows, p.student, p.seed)
    with tracking.run("train", p, run_id_file=tracking.RUN_ID_FILE) as tr, tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        tr.metric("train_groups", len(rows["query"]))
        bf16 = use_bf16(p.train.dtype)
        logging.info("training on %d groups in %s (train.dtype=%s)", len(rows["query"]),
                     "bfloat16 mixed precision" if bf16 else "float32", p.train.dtype)  # fmt: skip
        seed = p.train.seed_or(p.seed)
        train_cfg = dataclasses.replace(p.train, learning_rate=p.student.learning_rate or p.train.learning_rate)
        corpus_loss: list[float] = []
        if p.train.corpus_epochs:  # the teacher's embedding of each unjudged passage first (kd.distill.corpus_fit)
            judged = {d for split in ("dev", "test") for docs in ds.qrels[split].values() for d in docs}
            corpus_loss = fit_to_teacher_matrix(
                model, view, judged, doc_text, p.train.corpus_epochs, train_cfg.learning_rate, p.train.batch_size,
                p.train.max_seq_length, seed, p.student.passage_prefix, Path(work) / "corpus",
            )  # fmt: skip
            for epoch, value in enumerate(corpus_loss, start=1):
                tr.metric("corpus_fit_loss", value, epoch)
        group = len(scores["doc_ids"].iloc[0]) if asymmetric else None
        curves = fit(
            model, rows, evaluator, p.loss, train_cfg, seed, Path(work), on_metrics=tr.metric, bf16=bf16,
            projection=projection, compute=p.compute, teacher_passages=group,
        )  # fmt: skip
        best = curves.best()
        dev_score = curves.mix(model, initial, evaluator, p.train.interpolate, p.train.interpolate_grid)
        save_student(model, p.student, STUDENT)
        curves.write(CURVES)
        tracking.register_student(STUDENT, model=model)
        summary = {
            "best_epoch": best["epoch"],
            "best_dev_pool_ndcg@10": best["dev_ndcg@10"],
            "interpolate": p.train.interpolate,
            "dev_pool_ndcg@10": dev_score,  # the saved weights (= best_dev_pool_ndcg@10 unless train.interpolate < 1)
            "untrained_dev_pool_ndcg@10": curves.epochs[0]["dev_ndcg@10"],
            "dev_pool_size": dev_pool_size,
            "final_loss": curves.steps[-1]["total"] if curves.steps else float("nan"),
            "train_groups": len(rows["query"]),
            "corpus_fit_loss": corpus_loss,  # per epoch of train.corpus_epochs (empty when 0)
        }
        write_text(CURVES / "metrics.json", json.dumps(summary, indent=2) + "\n")
        tr.metrics({k: v for k, v in summary.items() if isinstance(v, float | int)}, prefix="final_")
        tr.artifact(CURVES)
    logging.info("%s: %s", VAL_METRIC, summary)


if __name__ == "__main__":
    run_stage("train", main)
