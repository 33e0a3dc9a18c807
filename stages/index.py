"""Stage `index`: the distilled student encodes the corpus into a FAISS index + id map + passages.

With `index.passages=teacher` (asymmetric serving) the index holds the teacher's passage matrix instead
(stage `teacher_corpus`) and the student encodes only queries: no corpus pass here at all.

The corpus encode runs where `compute` says (`kd.compute`: here, or on Ray actors) in shards kept
under `.cache/encode/index/`, so a killed stage resumes from its finished shards.
"""

import dataclasses
import logging
from pathlib import Path

from kd import artifacts, compute, tracking
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.errors import ArtifactError
from kd.models.runtime import corpus_encoder
from kd.paths import cache_dir
from kd.retrieval import index

STUDENT = artifacts.STUDENT
OUT = artifacts.INDEX


def main(p: Params) -> None:
    if not (STUDENT / "modules.json").exists():
        raise ArtifactError(f"{STUDENT} holds no trained student: run `dvc repro train` first")
    compute.check(p.compute)
    ds = read_dataset(Path("data"))
    docids = sorted(ds.corpus)  # row order is stable
    texts = [passage_text(ds.corpus[d]) for d in docids]
    spec = compute.ModelSpec.student(p.student, STUDENT)
    emb = index.passage_vectors(p, spec, artifacts.TEACHER_CORPUS, docids, texts, cache_dir() / "encode" / "index")
    idx = index.build(emb, p.index, p.seed)
    meta = {
        "student": p.student.model,
        "student_dir": str(STUDENT),
        "student_backend": p.student.backend,  # the query encoder the service uses
        "passages": p.index.passages,  # student (symmetric) | teacher (asymmetric: the teacher's passage matrix)
        "corpus_encoder": corpus_encoder(p),
        "compute": p.compute.backend,
        "teacher": p.teacher.model,
        "index": dataclasses.asdict(p.index),
        "corpus_size": len(docids),
        "dim": int(emb.shape[1]),
        "bytes_per_vector": round(index.bytes_per_vector(idx), 1),
        "data": ds.meta.get("source", ""),
        **tracking.provenance(),
    }
    index.save(OUT, idx, docids, ds.corpus, meta)
    logging.info("indexed %d passages (%s, %.0f bytes/vector)", len(docids), p.index.type, meta["bytes_per_vector"])


if __name__ == "__main__":
    run_stage("index", main)
