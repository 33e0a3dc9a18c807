"""MLflow logging in one place: one run per pipeline run (`train`, then `evaluate` resumes it), into
the repo's sqlite store, in an experiment `mlflow ui` opens on the runs table."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kd import artifacts
from kd.atomic import write_text
from kd.config import Params
from kd.paths import mlflow_uri, repo_root

EXPERIMENT = "kd-search"


def git_commit() -> str:
    """The repository's HEAD commit, or `unknown` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root())
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance() -> dict[str, str]:
    """Git commit and DVC experiment name (DVC sets DVC_EXP_NAME inside `dvc exp run`)."""
    return {"git_commit": git_commit(), "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")}


class Tracker:
    """Logs into the active MLflow run, with names MLflow accepts (`nDCG@10` -> `nDCG_at_10`).

    Example::

        with run("train", params, RUN_ID_FILE) as tracker:
            tracker.metric("loss_total", 0.41, step=10)
    """

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        """One metric value (at `step`, for curves); characters MLflow refuses become `_`."""
        name = re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))
        self.mlflow.log_metric(name, float(value), step=step)

    def metrics(self, values: dict[str, float], prefix: str = "") -> None:
        """Several metrics at once, each name prefixed (e.g. `test.`)."""
        for k, v in values.items():
            self.metric(f"{prefix}{k}", v)

    def artifact(self, path: Path) -> None:
        """A file, or a folder under its own name, as run artifacts; a missing path is skipped."""
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            self.mlflow.log_artifact(str(path))


# How `mlflow ui` opens the experiment. MLflow 3 reads the experiment tag `mlflow.experimentKind`
# (`custom_model_development` = the classic runs table; `genai_development` = the GenAI overview) where
# its workflow switch is off; in 3.17 the switch is on and the UI follows the `workflowType` URL
# parameter (or the sidebar's "Machine learning" choice, kept in the browser), so `ui_url` sets both.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A saved view of the runs table (an experiment tag the UI reads for `?viewStateShareKey=<key>`): the
# columns a person compares, best test nDCG@10 first.
VIEW_KEY = "kd-compare"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_METRICS = (
    "test.kd.nDCG_at_10", "test.kd.MRR_at_10", "test.gap_closed", "test.student_over_teacher",
    "dev.kd.nDCG_at_10", "dev.kd.MRR_at_10", "dev.gap_closed", "test.kd_rerank_at_10.nDCG_at_10",
    "test.untrained.nDCG_at_10", "test.teacher.nDCG_at_10", "final_best_dev_pool_ndcg_at_10",
)  # fmt: skip
VIEW_PARAMS = ("loss.margin_mse", "loss.listwise_kl", "loss.in_batch", "train.epochs", "seed")
RUN_ID_FILE = artifacts.MLFLOW_RUN  # train writes it; evaluate logs into that run


def view_state() -> str:
    """The saved-view envelope MLflow 3's runs page parses: name, times and the JSON-encoded table state."""
    columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{k}`" for k in VIEW_PARAMS]
    state = {"orderByKey": f"metrics.`{VIEW_METRICS[0]}`", "orderByAsc": False, "selectedColumns": columns}
    return json.dumps({"name": "KD comparison", "createdAt": 0, "updatedAt": 0, "state": json.dumps(state)})


def setup_experiment(mlflow: Any) -> str:
    """Create or fetch the experiment; tag it as classic ML (runs table) and store the comparison view."""
    exp = mlflow.set_experiment(EXPERIMENT)
    client = mlflow.MlflowClient()
    for key, value in ((EXPERIMENT_KIND_TAG, EXPERIMENT_KIND), (VIEW_TAG, view_state())):
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return str(exp.experiment_id)


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The `mlflow ui` address of the runs table with the comparison columns shown."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def _resumable(mlflow: Any, run_id_file: Path | None, experiment_id: str) -> str | None:
    """The run id in `run_id_file` when that run is live in this store and experiment, else None."""
    if run_id_file is None or not run_id_file.exists():
        return None
    try:
        run_id = json.loads(run_id_file.read_text())["run_id"]
        found = mlflow.MlflowClient().get_run(run_id)
    except Exception as e:  # noqa: BLE001 - a stale or foreign id: start a new run instead
        logging.info("not resuming the MLflow run in %s (%s): starting a new one", run_id_file, e)
        return None
    if found.info.experiment_id != experiment_id or found.info.lifecycle_stage != "active":
        return None
    return str(run_id)


@contextmanager
def run(stage: str, params: Params, run_id_file: Path | None = None, resume: bool = False) -> Iterator[Tracker]:
    """An MLflow run tagged with stage, git commit and DVC experiment, with all params flattened.

    One run per pipeline run: `train` passes `run_id_file` (the run id is written there); `evaluate`
    passes the same file with `resume=True` and logs into that run when it exists in the store (else
    it starts its own). A param already logged with another value keeps it; the new value is logged
    as `<stage>.<key>` (MLflow params are immutable).
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri())
    experiment_id = setup_experiment(mlflow)
    prov = provenance()
    run_id = _resumable(mlflow, run_id_file, experiment_id) if resume else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else prov["dvc_experiment"] or "workspace") as active:
        stages = active.data.tags.get("stages", "")
        mlflow.set_tags({"stage": stage, "stages": ",".join(filter(None, [stages, stage])), **prov})
        flat = {k: str("null" if v is None else v)[:500] for k, v in params.flat().items()}
        logged = active.data.params
        mlflow.log_params({k: v for k, v in flat.items() if k not in logged})
        mlflow.log_params({f"{stage}.{k}": v for k, v in flat.items() if k in logged and logged[k] != v})
        if run_id_file is not None and not resume:
            write_text(run_id_file, json.dumps({"run_id": active.info.run_id, "experiment_id": experiment_id}) + "\n")
        yield Tracker(mlflow)
    logging.info("MLflow run %s: %s", active.info.run_id, ui_url(experiment_id))


STUDENT_MODEL = "kd-student"  # the registered model name the service's `models:/kd-student@<alias>` refers to


def register_student(student_dir: Path, name: str = STUDENT_MODEL, model: Any = None) -> str:
    """Log the saved student as an MLflow sentence-transformers model in the active run; register a version.

    Call it inside `run("train", ...)`. Returns the new version number. A person promotes it with an
    alias (`MlflowClient().set_registered_model_alias(name, "production", version)`) and the service
    loads `models:/<name>@production`; the DVC folder stays the default. `model` (the in-memory
    SentenceTransformer) saves a reload from `student_dir`.
    """
    import mlflow
    from sentence_transformers import SentenceTransformer

    if mlflow.active_run() is None:
        raise RuntimeError("register_student needs an active MLflow run: call it inside kd.tracking.run(...)")
    st = model if model is not None else SentenceTransformer(str(student_dir), device="cpu")
    info = mlflow.sentence_transformers.log_model(st, name="student", registered_model_name=name)
    version = str(info.registered_model_version)
    mlflow.set_tag("registered_student", f"{name}/{version}")
    logging.info("student registered as %s version %s (promote: set an alias such as @production)", name, version)
    return version
