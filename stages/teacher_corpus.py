"""Stage `teacher_corpus`: the bi-encoder teacher encodes every passage once, through `kd.compute`
(in this process, or on a Ray actor pool with `compute=ray`), in shards of `teacher.corpus_chunk`
passages kept under <cache>/teacher_corpus/<fingerprint>/compute/, so a killed run resumes.

A cross-encoder teacher has no passage embeddings: the stage then writes an empty view whose
meta says so, and the stages that read it fall back to pair scoring (or say what is skipped).
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np

from kd import artifacts, compute
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.models import teacher_corpus
from kd.models.runtime import corpus_backend_for
from kd.models.student_families import check_layers_exist
from kd.models.teacher import corpus_key
from kd.paths import cache_dir, sweep_stale

OUT = artifacts.TEACHER_CORPUS


def main(p: Params) -> None:
    check_layers_exist(p.student)  # a bad student.layers fails here, not after this pass
    ds = read_dataset(Path("data"))
    docids = sorted(ds.corpus)
    texts = [passage_text(ds.corpus[d]) for d in docids]
    key = corpus_key(p.teacher)  # the backend joins the key when it is not torch (an int8 matrix is its own)
    meta = {"model": p.teacher.model, "kind": p.teacher.kind, "model_key": key,
            "corpus_backend": corpus_backend_for(p.teacher.corpus_backend),
            "fingerprint": teacher_corpus.fingerprint(docids, texts, key)}  # fmt: skip
    compute.check(p.compute)
    if p.teacher.kind != "bi_encoder":
        logging.info("teacher.kind=%s: no passage embeddings; downstream stages score pairs", p.teacher.kind)
        teacher_corpus.write(OUT, [], np.zeros((0, 0), dtype=np.float16), meta)
        return
    chunk_dir = cache_dir() / "teacher_corpus" / meta["fingerprint"] / "compute"
    sweep_stale(chunk_dir.parent.parent, keep=meta["fingerprint"])  # other inputs' passes, unused for weeks
    shards = dataclasses.replace(p.compute, batch_size=p.teacher.corpus_chunk)  # a shard: one kept chunk
    emb = compute.encode_texts(texts, compute.ModelSpec.teacher(p.teacher), shards, chunk_dir, store_dtype=np.float16)
    teacher_corpus.write(OUT, docids, emb, meta)
    logging.info("%d passages encoded by %s on %s (dim %d)", len(docids), p.teacher.model, meta["corpus_backend"], emb.shape[1])


if __name__ == "__main__":
    run_stage("teacher_corpus", main)
