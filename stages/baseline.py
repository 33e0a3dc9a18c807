"""Stage `baseline`: the untrained student over the corpus -> dense runs (evaluation + optional mining).

Its own stage so a loss-weight change never re-encodes the corpus with the untrained model.
"""

from pathlib import Path

from kd import index
from kd.atomic import atomic_dir
from kd.backends import load_student
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import read_dataset
from kd.metrics import write_trec
from kd.models import encode

OUT = Path("artifacts/baseline")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    corpus_model = load_student(p.student.model, p.student.corpus_backend, p.student.max_seq_length)
    docids, emb = index.embed_corpus(
        corpus_model, ds.corpus, p.student.passage_prefix, p.student.batch_size, p.student.dtype
    )
    same = p.student.backend == p.student.corpus_backend
    model = corpus_model if same else load_student(p.student.model, p.student.backend, p.student.max_seq_length)
    idx = index.build(emb, p.index)
    with atomic_dir(OUT) as tmp:
        for split in ("train", "test"):
            qids = list(ds.queries[split])
            q_emb = encode(model, [ds.queries[split][q] for q in qids], p.student.query_prefix, p.student.batch_size)
            run = index.to_run(qids, index.search(idx, q_emb, docids, p.eval.depth))
            write_trec(run, tmp / "runs" / f"{split}.trec", "untrained")


if __name__ == "__main__":
    run_stage("baseline", main)
