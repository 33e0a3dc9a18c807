"""Stage `negatives`: hard negatives per training query, false negatives removed by the teacher.

Candidates: the top-`mining.depth` of each run in `mining.sources` (`bm25`; `dense`, the untrained
student's own ranking, i.e. the mistakes the teacher should correct), in that order. Passages
judged for test queries are never used, so no test answer wording reaches training.
"""

import logging
import random
from pathlib import Path

import pandas as pd

from kd import mining
from kd.atomic import atomic_path
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import passage_text, read_dataset
from kd.errors import DataError
from kd.metrics import read_trec
from kd.models import load_teacher
from kd.paths import cache_dir
from kd.teacher import CachedTeacher

OUT = Path("artifacts/negatives.parquet")


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    teacher = CachedTeacher(load_teacher(p.teacher), cache_dir() / "teacher")  # fail fast on a bad teacher
    files = {"bm25": Path("artifacts/bm25/runs/train.trec"), "dense": Path("artifacts/baseline/runs/train.trec")}
    runs = {source: read_trec(files[source]) for source in p.mining.sources}
    test_judged = {d for docs in ds.qrels["test"].values() for d in docs}
    groups = mining.candidates(ds.qrels["train"], runs, p.mining.depth, test_judged)
    if not groups:
        raise DataError("data/qrels/train.tsv has no judged training queries: raise data.max_train_queries")
    qs, ps = [], []
    for g in groups:
        for d in [g.pos_id, *g.cand_ids]:
            qs.append(ds.queries["train"][g.qid])
            ps.append(passage_text(ds.corpus[d]))
    scores = teacher.score(qs, ps)
    rng = random.Random(p.seed)
    # pad short groups with other queries' candidates: in-domain, and already teacher-scored (cached)
    pool = sorted({d for g in groups for d in [g.pos_id, *g.cand_ids]} - test_judged)
    rows, offset, dropped = [], 0, 0
    for g in groups:
        n = 1 + len(g.cand_ids)
        s = scores[offset : offset + n].tolist()
        offset += n
        negs, srcs = mining.select(
            g, s[0], s[1:], p.mining.num_negatives, p.mining.fn_margin, p.mining.fn_threshold, pool, rng
        )
        dropped += sum(not k for k in mining.keep_mask(s[0], s[1:], p.mining.fn_margin, p.mining.fn_threshold))
        rows.append({"qid": g.qid, "pos_id": g.pos_id, "neg_ids": negs, "sources": srcs})
    df = pd.DataFrame(rows)
    with atomic_path(OUT) as tmp:
        df.to_parquet(tmp, index=False)
    n_cands = sum(len(g.cand_ids) for g in groups)
    logging.info("%d groups; %d of %d candidates dropped as likely false negatives", len(df), dropped, n_cands)


if __name__ == "__main__":
    run_stage("negatives", main)
