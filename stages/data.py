"""Stage `data`: build the configured dataset into data/ (corpus, queries and qrels per split)."""

import logging
from pathlib import Path

from kd.cli import run_stage
from kd.config import Params
from kd.data import load_source
from kd.data.io import write_dataset

OUT = Path("data")


def main(p: Params) -> None:
    ds = load_source(p.data, p.seed)
    write_dataset(ds, OUT)
    logging.info("wrote %s: %s", OUT, ds.counts())


if __name__ == "__main__":
    run_stage("data", main)
