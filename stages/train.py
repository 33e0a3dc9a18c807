"""Stage `train`: the student learns the teacher's scores (and, with a bi-encoder teacher, its
in-batch similarity matrix); the best epoch by dev nDCG@10 over a pool is kept."""

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from kd import artifacts, tracking
from kd.atomic import write_text
from kd.cli import run_stage
from kd.config import Params
from kd.distill.dev import VAL_METRIC, dev_setup
from kd.distill.inputs import load_training_inputs
from kd.distill.train import train as fit
from kd.models.loading import load_bi_encoder, save_student
from kd.models.runtime import use_bf16
from kd.models.student_families import initial_student
from kd.paths import cache_dir

STUDENT = artifacts.STUDENT
CURVES = artifacts.TRAIN
DEV_POOL_RUNS = (artifacts.bm25_run("dev"), artifacts.baseline_run("dev"))


def main(p: Params) -> None:
    inp = load_training_inputs(p, Path("data"), artifacts.TEACHER_SCORES, artifacts.NEGATIVES, artifacts.TEACHER_CORPUS)
    evaluator, dev_pool_size = dev_setup(p, inp.ds, inp.doc_text, inp.teacher, inp.view, DEV_POOL_RUNS)
    model = load_bi_encoder(initial_student(p.student), p.train.max_seq_length)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # for train.interpolate (WiSE-FT)
    projection = inp.projection(model, p)
    with (
        tracking.run("train", p, run_id_file=tracking.RUN_ID_FILE) as tr,
        tempfile.TemporaryDirectory(dir=cache_dir()) as work,
    ):
        tr.metric("train_groups", inp.groups)
        bf16 = use_bf16(p.train.dtype)
        logging.info("training on %d groups in %s (train.dtype=%s)", inp.groups,
                     "bfloat16 mixed precision" if bf16 else "float32", p.train.dtype)  # fmt: skip
        seed = p.train.seed_or(p.seed)
        train_cfg = dataclasses.replace(p.train, learning_rate=p.student.learning_rate or p.train.learning_rate)
        corpus_loss = inp.fit_corpus(model, p, train_cfg.learning_rate, seed, Path(work) / "corpus", tr.metric)
        curves = fit(
            model, inp.rows, evaluator, p.loss, train_cfg, seed, Path(work), on_metrics=tr.metric, bf16=bf16,
            projection=projection, compute=p.compute, teacher_passages=inp.teacher_group_size,
        )  # fmt: skip
        dev_score = curves.mix(model, initial, evaluator, p.train.interpolate, p.train.interpolate_grid)
        save_student(model, p.student, STUDENT)
        curves.write(CURVES)
        tracking.register_student(STUDENT, model=model)
        summary = curves.summary(dev_score, p.train.interpolate, dev_pool_size, inp.groups, corpus_loss)
        write_text(CURVES / "metrics.json", json.dumps(summary, indent=2) + "\n")
        tr.metrics({k: v for k, v in summary.items() if isinstance(v, float | int)}, prefix="final_")
        tr.artifact(CURVES)
    logging.info("%s: %s", VAL_METRIC, summary)


if __name__ == "__main__":
    run_stage("train", main)
