"""Helpers for the service tests, which run on the smoke pipeline's artifacts (`smoke_repo`)."""

from __future__ import annotations

from pathlib import Path

from kd.data.io import read_dataset

REPO = Path(__file__).resolve().parent.parent


def judged_test_queries(root: Path) -> dict[str, tuple[str, set[str]]]:
    """qid -> (text, relevant docids) of the test split in `root/data`."""
    ds = read_dataset(root / "data")
    return {
        q: (text, {d for d, rel in ds.qrels["test"][q].items() if rel > 0}) for q, text in ds.queries["test"].items()
    }
