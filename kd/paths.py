"""Where the project's shared, untracked state lives (caches, the MLflow store).

`dvc exp run --queue` runs each experiment in a copy under `.dvc/tmp/exps/`; those copies must
share the main checkout's caches and MLflow store, so paths resolve to the main repo root.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The main checkout, even when running inside a DVC experiment copy."""
    here = Path.cwd().resolve()
    parts = here.parts
    if ".dvc" in parts:
        idx = parts.index(".dvc")
        if parts[idx + 1 : idx + 3] == ("tmp", "exps"):
            return Path(*parts[:idx])
    return here


def cache_dir() -> Path:
    """`KD_CACHE_DIR` or `<repo>/.cache` (git-ignored): teacher embeddings, models, packages."""
    return Path(os.environ.get("KD_CACHE_DIR") or repo_root() / ".cache")


def mlflow_uri() -> str:
    """An absolute sqlite URI, so runs from any copy land in one store (`mlflow ui` reads it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"
