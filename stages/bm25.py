"""Stage `bm25`: Lucene index over the corpus and BM25 runs (TREC files) for every split."""

import logging
from pathlib import Path

from kd import artifacts
from kd.atomic import atomic_dir
from kd.cli import run_stage
from kd.config import Params
from kd.data.io import SPLITS, read_dataset
from kd.retrieval import bm25
from kd.retrieval.metrics import evaluate, write_trec

OUT = artifacts.BM25


def main(p: Params) -> None:
    ds = read_dataset(Path("data"))
    with atomic_dir(OUT) as tmp:
        bm25.build_index(ds.corpus, tmp / "index", p.bm25.threads)
        for split in SPLITS:
            run = bm25.search(tmp / "index", ds.queries[split], p.bm25.depth, p.bm25.k1, p.bm25.b, p.bm25.threads)
            write_trec(run, tmp / "runs" / f"{split}.trec", "bm25")
            if ds.qrels[split]:
                logging.info("%s: %s", split, evaluate(ds.qrels[split], run))


if __name__ == "__main__":
    run_stage("bm25", main)
