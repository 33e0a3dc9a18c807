"""Where the project's shared, untracked state lives (caches, the MLflow store).

`dvc exp run --queue` runs each experiment in a copy under `.dvc/tmp/exps/`; those copies must
share the main checkout's caches and MLflow store, so paths resolve to the main repo root.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

STALE_AFTER_DAYS = 14.0  # cache folders of other inputs untouched this long are swept


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


def sweep_stale(chunk_dir: Path, keep: str, max_age_days: float = STALE_AFTER_DAYS) -> list[str]:
    """Delete chunk folders (not `keep`) whose last write is older than `max_age_days`; return their names.

    A live run writes into its folder every chunk, so an old folder belongs to no running process.
    Each folder is first claimed by renaming it to a unique hidden name, so two sweepers never
    delete under each other, and a run that still finds its folder gone just recomputes.
    """
    if not chunk_dir.is_dir():  # nothing cached yet
        return []
    cutoff = time.time() - max_age_days * 86400
    swept = []
    for d in chunk_dir.iterdir():
        if d.name == keep or d.name.startswith(".") or not d.is_dir():
            continue
        try:
            if d.stat().st_mtime >= cutoff:
                continue
            claimed = d.with_name(f".sweep-{d.name}-{uuid.uuid4().hex[:8]}")
            d.rename(claimed)
        except OSError:  # another sweeper took it, or it changed under us
            continue
        shutil.rmtree(claimed, ignore_errors=True)
        swept.append(d.name)
    return swept
