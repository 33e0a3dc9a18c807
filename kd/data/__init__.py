"""Data sources: each builds the one canonical `Dataset` (see kd.data.io)."""

from __future__ import annotations

from kd.config import DataConfig
from kd.data.io import Dataset
from kd.errors import ConfigError

SOURCES = ("python_docs_faq", "beir_dir", "msmarco")


def load_source(cfg: DataConfig, seed: int) -> Dataset:
    """Build the dataset named by `data.name`."""
    caps = {
        "max_train_queries": cfg.max_train_queries,
        "max_val_queries": cfg.max_val_queries,
        "max_test_queries": cfg.max_test_queries,
        "max_passages": cfg.max_passages,
    }
    if cfg.name == "python_docs_faq":
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
    if cfg.name == "beir_dir":
        from kd.data import beir_dir

        return beir_dir.load(cfg.path, **caps)
    if cfg.name == "msmarco":
        from kd.data import msmarco

        return msmarco.load(seed=seed, **caps)
    raise ConfigError(f"data.name={cfg.name!r} is unknown: use one of {', '.join(SOURCES)} (conf/data/)")
