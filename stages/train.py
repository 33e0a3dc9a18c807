"""Stage `train`: the student learns the teacher's scores (and, with a bi-encoder teacher, its
in-batch similarity matrix); the best epoch by dev nDCG@10 over a pool is kept."""

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from kd import artifacts, teacher_corpus, tracking
from kd.atomic import atomic_dir, write_text
from kd.cli import run_stage
from kd.config import Params
from kd.corpus_fit import corpus_targets, fit_corpus
from kd.data.io import passage_text, read_dataset
from kd.errors import ConfigError, DataError
from kd.evaluation import teacher_run
from kd.metrics import read_trec
from kd.models import initial_student, load_bi_encoder, save_prompts, set_max_length
from kd.paths import cache_dir
from kd.runtime import use_bf16
from kd.teacher import BiEncoderTeacher, load_teacher
from kd.train import VAL_METRIC, dev_evaluator, fit_projection, teacher_index_evaluator, training_rows, wise_ft
from kd.train import train as fit

SCORES = artifacts.TEACHER_SCORES
NEGATIVES = artifacts.NEGATIVES
TEACHER_CORPUS = artifacts.TEACHER_CORPUS
STUDENT = artifacts.STUDENT
CURVES = artifacts.TRAIN
PROJECTION_FIT_PASSAGES = 2000  # loss.embed: passages (beside all training queries) for the projection's start
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

    dev_docs: set[str] = set()
    if asymmetric:  # dev: the student's queries against the teacher's whole matrix, as served
        assert view is not None  # config check: index.passages=teacher needs a bi-encoder teacher
        evaluator = teacher_index_evaluator(ds.queries["dev"], ds.qrels["dev"], view, p.student)
    elif p.student.kind == "static":  # its corpus pass takes seconds: dev is the whole corpus, as `evaluate` scores it
        dev_docs = set(ds.corpus)
        evaluator = dev_evaluator(ds.queries["dev"], ds.qrels["dev"], doc_text, p.student)
    else:  # dev pool: judged + the top of BM25, the untrained student and the teacher, as a full search would see
        dev_docs = {d for docs in ds.qrels["dev"].values() for d in docs}
        pool_runs = [read_trec(path) for path in DEV_POOL_RUNS]
        if view is not None and isinstance(teacher, BiEncoderTeacher):
            dev_qids = sorted(ds.queries["dev"])
            t_emb = dict(zip(dev_qids, teacher.encode_queries([ds.queries["dev"][q] for q in dev_qids])))
            pool_runs.append(teacher_run(t_emb, view, p.train.val_depth))
        for run in pool_runs:
            for docs in run.values():
                dev_docs |= set(sorted(docs, key=lambda d: -docs[d])[: p.train.val_depth])
        evaluator = dev_evaluator(ds.queries["dev"], ds.qrels["dev"], {d: doc_text[d] for d in sorted(dev_docs)}, p.student)
    model = load_bi_encoder(initial_student(p.student), p.train.max_seq_length)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # for train.interpolate (WiSE-FT)
    projection = None
    same_width = view is not None and model.get_sentence_embedding_dimension() == view.emb.shape[1]
    if p.loss.embed and teacher_q is not None and view is not None and not same_width:
        # loss.embed's student->teacher map starts at the least-squares fit over the training texts
        qids = sorted(set(scores["qid"].astype(str)))
        docids = sorted({str(d) for ids in scores["doc_ids"] for d in ids})
        docids = sorted(np.random.default_rng(p.seed).permutation(docids)[:PROJECTION_FIT_PASSAGES].tolist())
        texts = [p.student.query_prefix + query_text[q] for q in qids]
        texts += [p.student.passage_prefix + doc_text[d] for d in docids]
        logging.info("loss.embed: fitting the projection on %d training texts", len(texts))
        s_emb = model.encode(texts, batch_size=p.student.batch_size, normalize_embeddings=True, show_progress_bar=True)
        t_emb = np.vstack([np.stack([teacher_q[q] for q in qids]), view.rows(docids)]).astype(np.float32)
        projection = fit_projection(np.asarray(s_emb, dtype=np.float32), t_emb)
    with tracking.run("train", p, run_id_file=tracking.RUN_ID_FILE) as tr, tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        tr.metric("train_groups", len(rows["query"]))
        bf16 = use_bf16(p.train.dtype)
        logging.info("training on %d groups in %s (train.dtype=%s)", len(rows["query"]),
                     "bfloat16 mixed precision" if bf16 else "float32", p.train.dtype)  # fmt: skip
        seed = p.train.seed_or(p.seed)
        train_cfg = dataclasses.replace(p.train, learning_rate=p.student.learning_rate or p.train.learning_rate)
        corpus_loss: list[float] = []
        if p.train.corpus_epochs:  # the teacher's embedding of each unjudged passage first (kd.corpus_fit)
            if view is None:
                raise ConfigError(f"train.corpus_epochs={p.train.corpus_epochs} needs the teacher's passage matrix: "
                                  "a bi-encoder teacher (conf/teacher/), or train.corpus_epochs=0")  # fmt: skip
            judged = {d for split in ("dev", "test") for docs in ds.qrels[split].values() for d in docs}
            texts, targets = corpus_targets(view.docids, judged, doc_text, view.emb, p.student.passage_prefix)
            logging.info("train.corpus_epochs=%d over %d passages (%d judged for dev/test left out)",
                         p.train.corpus_epochs, len(texts), len(view.docids) - len(texts))  # fmt: skip
            corpus_loss = fit_corpus(model, texts, targets, p.train.corpus_epochs, train_cfg.learning_rate,
                                     p.train.batch_size, p.train.max_seq_length, seed, Path(work) / "corpus")  # fmt: skip
            for epoch, value in enumerate(corpus_loss, start=1):
                tr.metric("corpus_fit_loss", value, epoch)
        group = len(scores["doc_ids"].iloc[0]) if asymmetric else None
        curves = fit(
            model, rows, evaluator, p.loss, train_cfg, seed, Path(work), on_metrics=tr.metric, bf16=bf16,
            projection=projection, compute=p.compute, teacher_passages=group,
        )  # fmt: skip
        trained = curves.epochs[1:] or curves.epochs  # row 0 is the untrained model, which is never saved
        best = max(trained, key=lambda r: r["dev_ndcg@10"])  # the epoch the trainer kept
        known = {0.0: curves.epochs[0]["dev_ndcg@10"], 1.0: best["dev_ndcg@10"]}
        dev_score, mixes = wise_ft(model, initial, evaluator, p.train.interpolate, p.train.interpolate_grid, known)
        set_max_length(model, p.student.max_seq_length)
        save_prompts(model, p.student)  # the saved student carries its own prefixes (checked at load)
        with atomic_dir(STUDENT) as tmp:
            model.save(str(tmp), create_model_card=False)  # the card holds a timestamp: same weights, same hash
        curves.mixes = mixes
        curves.write(CURVES)
        tracking.register_student(STUDENT, model=model)
        summary = {
            "best_epoch": best["epoch"],
            "best_dev_pool_ndcg@10": best["dev_ndcg@10"],
            "interpolate": p.train.interpolate,
            "dev_pool_ndcg@10": dev_score,  # the saved weights (= best_dev_pool_ndcg@10 unless train.interpolate < 1)
            "untrained_dev_pool_ndcg@10": curves.epochs[0]["dev_ndcg@10"],
            "dev_pool_size": len(dev_docs) if not asymmetric else len(view.docids) if view else 0,
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
