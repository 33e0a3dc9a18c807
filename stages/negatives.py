"""Stage `negatives`: training groups (query, positive, hard negatives), false negatives removed.

Queries: the judged training queries (a `mining.question_share` of them rewritten as questions by a
template, kd.distill.pseudo), plus `mining.pseudo_queries` spans cropped from passages (kd.distill.pseudo) whose
positive is the teacher's own top-1 over the whole corpus. Candidates: the
top-`mining.depth` of each run in `mining.sources` (`bm25`; `dense`, the untrained student's
ranking; `teacher`, the teacher's top-K over the corpus). Candidates are scored by the teacher
(dot products with the `teacher_corpus` matrix for a bi-encoder, pair scoring for a cross-encoder)
and the hardest survivors of the false-negative filter are kept (`kd.distill.mining.mine`). Passages
judged for dev or test queries are never candidates, padding, pseudo-query sources or positives.

Output columns: qid, query (text), pos_id, neg_ids, sources, teacher_q (the bi-encoder teacher's
query embedding, float32 list; empty for a cross-encoder), so later stages never re-encode queries.
"""

from pathlib import Path

from kd import artifacts
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import read_dataset
from kd.distill import mining
from kd.models.teacher import load_with_matrix
from kd.paths import cache_dir
from kd.retrieval.metrics import Run, read_trec

OUT = artifacts.NEGATIVES


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    teacher, view = load_with_matrix(p.teacher, artifacts.TEACHER_CORPUS, sorted(ds.corpus))
    files = {"bm25": artifacts.bm25_run("train"), "dense": artifacts.baseline_run("train")}
    runs: dict[str, Run] = {s: read_trec(files[s]) for s in p.mining.sources if s in files}
    df = mining.mine(p.mining, p.seed, ds, runs, teacher, view, cache_dir() / "teacher")
    with atomic_path(OUT) as tmp:
        df.to_parquet(tmp, index=False)


if __name__ == "__main__":
    run_stage("negatives", main)
