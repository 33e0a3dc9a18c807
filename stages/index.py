"""Stage `index`: the distilled student encodes the corpus into a FAISS index + id map + passages."""

import dataclasses
import logging
from pathlib import Path

from kd import index, tracking
from kd.backends import corpus_encoder, load_student
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import read_dataset
from kd.errors import ArtifactError

STUDENT = Path("artifacts/student")
OUT = Path("artifacts/index")


def main(p: Params) -> None:
    if not (STUDENT / "modules.json").exists():
        raise ArtifactError(f"{STUDENT} holds no trained student: run `dvc repro train` first")
    ds = read_dataset(Path("data"))
    model = load_student(STUDENT, p.student.corpus_backend, p.student.max_seq_length)
    docids, emb = index.embed_corpus(
        model, ds.corpus, p.student.passage_prefix, p.student.batch_size, p.student.dtype
    )
    idx = index.build(emb, p.index)
    meta = {
        "student": p.student.model,
        "student_dir": str(STUDENT),
        "student_backend": p.student.backend,  # the query encoder the service uses
        "corpus_encoder": corpus_encoder(p),
        "teacher": p.teacher.model,
        "index": dataclasses.asdict(p.index),
        "corpus_size": len(docids),
        "dim": int(emb.shape[1]),
        "data": ds.meta.get("source", ""),
        **tracking.provenance(),
    }
    index.save(OUT, idx, docids, ds.corpus, meta)
    logging.info("indexed %d passages (%s)", len(docids), p.index.type)


if __name__ == "__main__":
    run_stage("index", main)
