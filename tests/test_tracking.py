"""kd.tracking: a real MLflow sqlite store gets params, metrics and provenance tags."""

from pathlib import Path

import pytest

from kd import tracking
from kd.config import Params


def test_run_logs_params_metrics_and_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    with tracking.run("train", Params()) as tr:
        tr.metric("val_ndcg@10", 0.5, step=1)
        tr.metrics({"nDCG@10": 0.7}, prefix="kd+rerank@10.")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["loss.margin_mse"] == "0.6"
    assert run.data.metrics["val_ndcg_at_10"] == 0.5
    assert run.data.metrics["kd_rerank_at_10.nDCG_at_10"] == 0.7
    assert run.data.tags["stage"] == "train" and run.data.tags["dvc_experiment"] == "exp-test"
    assert run.data.tags["git_commit"]
