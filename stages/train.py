"""Stage `train`: the student learns the teacher's scores; best epoch (val nDCG@10) is kept."""

import json
import logging
import tempfile
from pathlib import Path

import pandas as pd

from kd import tracking
from kd.atomic import atomic_dir, write_text
from kd.backends import use_bf16
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.errors import DataError
from kd.metrics import read_trec
from kd.models import load_bi_encoder
from kd.paths import cache_dir
from kd.train import VAL_METRIC, training_rows, val_evaluator
from kd.train import train as fit

SCORES = Path("artifacts/teacher_scores.parquet")
STUDENT = Path("artifacts/student")
CURVES = Path("artifacts/train")


def main(p: Params) -> None:
    if not SCORES.exists():
        raise DataError(f"{SCORES} not found: run `dvc repro teacher` first")
    ds = read_dataset(Path("data"))
    doc_text = {d: passage_text(v) for d, v in ds.corpus.items()}
    rows = training_rows(pd.read_parquet(SCORES), ds.queries["train"], doc_text, p.student)
    val_run = read_trec(Path("artifacts/bm25/runs/val.trec"))
    val_docs = {d for docs in ds.qrels["val"].values() for d in docs}
    for docs in val_run.values():
        val_docs |= set(sorted(docs, key=lambda d: -docs[d])[: p.train.val_depth])
    evaluator = val_evaluator(ds.queries["val"], ds.qrels["val"], {d: doc_text[d] for d in sorted(val_docs)}, p.student)
    model = load_bi_encoder(p.student.model, p.train.max_seq_length)
    with tracking.run("train", p) as tr, tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        tr.metric("train_groups", len(rows["query"]))
        bf16 = use_bf16(p.train.dtype)
        logging.info("training in %s (train.dtype=%s)", "bfloat16 mixed precision" if bf16 else "float32", p.train.dtype)
        curves = fit(model, rows, evaluator, p.loss, p.train, p.seed, Path(work), on_metrics=tr.metric, bf16=bf16)
        model.max_seq_length = p.student.max_seq_length
        with atomic_dir(STUDENT) as tmp:
            model.save(str(tmp), create_model_card=False)  # the card holds a timestamp: same weights, same hash
        curves.write(CURVES)
        trained = curves.epochs[1:] or curves.epochs  # row 0 is the untrained model, which is never saved
        best = max(trained, key=lambda r: r["val_ndcg@10"])  # the epoch the trainer kept
        summary = {
            "best_epoch": best["epoch"],
            "best_val_ndcg@10": best["val_ndcg@10"],
            "untrained_val_ndcg@10": curves.epochs[0]["val_ndcg@10"],
            "final_loss": curves.steps[-1]["total"] if curves.steps else float("nan"),
            "train_groups": len(rows["query"]),
        }
        write_text(CURVES / "metrics.json", json.dumps(summary, indent=2) + "\n")
        tr.metrics({k: v for k, v in summary.items() if isinstance(v, float | int)}, prefix="final_")
        tr.artifact(CURVES)
    logging.info("val %s: %s", VAL_METRIC, summary)


if __name__ == "__main__":
    run_stage("train", main)
