"""MLflow logging in one place: one run per `train` / `evaluate`, into the repo's sqlite store."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kd.config import Params
from kd.paths import mlflow_uri, repo_root

EXPERIMENT = "kd-search"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root())
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance() -> dict[str, str]:
    """Git commit and DVC experiment name (DVC sets DVC_EXP_NAME inside `dvc exp run`)."""
    return {"git_commit": git_commit(), "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")}


class Tracker:
    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        name = re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))
        self.mlflow.log_metric(name, float(value), step=step)

    def metrics(self, values: dict[str, float], prefix: str = "") -> None:
        for k, v in values.items():
            self.metric(f"{prefix}{k}", v)

    def artifact(self, path: Path) -> None:
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            self.mlflow.log_artifact(str(path))


@contextmanager
def run(stage: str, params: Params) -> Iterator[Tracker]:
    """An MLflow run tagged with stage, git commit and DVC experiment, with all params flattened."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri())
    mlflow.set_experiment(EXPERIMENT)
    prov = provenance()
    name = f"{stage}:{prov['dvc_experiment'] or 'workspace'}"
    with mlflow.start_run(run_name=name, tags={"stage": stage, **prov}):
        flat = {k: ("null" if v is None else v) for k, v in params.flat().items()}
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        yield Tracker(mlflow)
