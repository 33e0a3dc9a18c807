"""Stage `baseline`: the untrained student over the corpus -> dense runs (evaluation + optional mining).

With `index.passages=teacher` the untrained student encodes only the queries, against the teacher's
passage matrix (stage `teacher_corpus`): the same asymmetric system the trained student is served as.

Its own stage so a loss-weight change never re-encodes the corpus with the untrained model. The corpus
encode runs where `compute` says (`kd.compute`), in shards kept under `.cache/encode/baseline/`.
"""

from pathlib import Path

from kd import artifacts, compute
from kd.atomic import atomic_dir
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import SPLITS, passage_text, read_dataset
from kd.models.backends import load_student
from kd.models.loading import encode
from kd.models.student_families import initial_student
from kd.paths import cache_dir
from kd.retrieval import index, search
from kd.retrieval.metrics import write_trec

OUT = artifacts.BASELINE


def main(p: Params) -> None:
    compute.check(p.compute)
    ds = read_dataset(Path("data"))
    docids = sorted(ds.corpus)
    texts = [passage_text(ds.corpus[d]) for d in docids]
    model = load_student(initial_student(p.student), p.student.backend, p.student.max_seq_length)  # queries: few, local
    spec = compute.ModelSpec.student(p.student)  # the untrained student; asymmetric: the teacher's passages
    emb = index.passage_vectors(p, spec, artifacts.TEACHER_CORPUS, docids, texts, cache_dir() / "encode" / "baseline")
    idx = index.build(emb, p.index, p.seed)
    with atomic_dir(OUT) as tmp:
        for split in SPLITS:
            qids = list(ds.queries[split])
            q_emb = encode(model, [ds.queries[split][q] for q in qids], p.student.query_prefix, p.student.batch_size)
            run = search.to_run(qids, search.search(idx, q_emb, docids, p.eval.depth))
            write_trec(run, tmp / "runs" / f"{split}.trec", "untrained")


if __name__ == "__main__":
    run_stage("baseline", main)
