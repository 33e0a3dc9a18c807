"""Stage `teacher_corpus`: the bi-encoder teacher encodes every passage once (chunked, resumable).

A cross-encoder teacher has no passage embeddings: the stage then writes an empty view whose
meta says so, and the stages that read it fall back to pair scoring (or say what is skipped).
"""

import logging
from pathlib import Path

import numpy as np

from kd import teacher_corpus
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.models import BiEncoderTeacher, load_teacher
from kd.paths import cache_dir
from kd.teacher import model_key

OUT = Path("artifacts/teacher_corpus")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    docids = sorted(ds.corpus)
    texts = [passage_text(ds.corpus[d]) for d in docids]
    key = model_key(p.teacher)
    meta = {"model": p.teacher.model, "kind": p.teacher.kind, "model_key": key,
            "fingerprint": teacher_corpus.fingerprint(docids, texts, key)}  # fmt: skip
    teacher = load_teacher(p.teacher)
    if not isinstance(teacher, BiEncoderTeacher):
        logging.info("teacher.kind=%s: no passage embeddings; downstream stages score pairs", p.teacher.kind)
        teacher_corpus.write(OUT, [], np.zeros((0, 0), dtype=np.float16), meta)
        return
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))  # similar lengths batch together
    emb_sorted = teacher_corpus.encode_chunked(
        [texts[i] for i in order], teacher.encode_passages, cache_dir() / "teacher_corpus" / meta["fingerprint"],
        p.teacher.corpus_chunk,
    )
    emb = np.empty_like(emb_sorted)
    emb[order] = emb_sorted
    teacher_corpus.write(OUT, docids, emb, meta)
    logging.info("%d passages encoded by %s (dim %d)", len(docids), p.teacher.model, emb.shape[1])


if __name__ == "__main__":
    run_stage("teacher_corpus", main)
