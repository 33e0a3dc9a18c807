"""Data sources: each builds the one canonical `Dataset` (see kd.data.io)."""

from __future__ import annotations

from typing import Any

from kd.config import DATA_SOURCES, BeirDirData, DataConfig, MsMarcoData, PythonDocsFaqData
from kd.data.io import Dataset
from kd.errors import ConfigError, DataError


def load_source(cfg: DataConfig, seed: int) -> Dataset:
    """Build the dataset named by `data.name`; a held-out split without queries is an error."""
    ds = _build(cfg, seed)
    for split in ("dev", "test"):
        if not ds.qrels.get(split):
            raise DataError(
                f"data={cfg.name}: the {split} split has no judged queries, and dev (choosing) and test (reporting) "
                f"both need some. Raise data.max_{split}_queries / data.dev_fraction, or add qrels/{split}.tsv."
            )
    return ds


def _build(cfg: DataConfig, seed: int) -> Dataset:
    caps: dict[str, Any] = {
        "max_train_queries": cfg.max_train_queries,
        "max_dev_queries": cfg.max_dev_queries,
        "max_test_queries": cfg.max_test_queries,
        "max_passages": cfg.max_passages,
        "dev_fraction": cfg.dev_fraction,
    }
    if isinstance(cfg, PythonDocsFaqData):
        from kd.data import python_docs_faq

        return python_docs_faq.load(
            cfg.debian_package,
            cfg.doc_dir,
            min_words=cfg.min_words,
            max_words=cfg.max_words,
            exclude=tuple(cfg.exclude),
            seed=seed,
            **caps,
        )
    if isinstance(cfg, BeirDirData):
        from kd.data import beir_dir

        return beir_dir.load(cfg.path, **caps)
    if isinstance(cfg, MsMarcoData):
        from kd.data import msmarco

        return msmarco.load(seed=seed, **caps)
    raise ConfigError(f"data.name={cfg.name!r} is unknown: use one of {', '.join(DATA_SOURCES)} (conf/data/)")
