"""kd.tracking: a real MLflow sqlite store gets params, metrics and provenance tags; `mlflow ui` shows them."""

import dataclasses
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pytest

from kd import tracking
from kd.config import Params
from tests.browser_fixtures import free_port, needs_chromium


@pytest.mark.slow
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


@pytest.mark.slow
def test_experiment_opens_on_the_runs_table_with_the_comparison_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with tracking.run("train", Params()):
        pass
    import json

    import mlflow

    exp = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags[tracking.VIEW_TAG])
    state = json.loads(view["state"])
    assert (
        "metrics.`test.kd.nDCG_at_10`" in state["selectedColumns"]
        and "metrics.`dev.gap_closed`" in state["selectedColumns"]
    )
    url = tracking.ui_url(exp.experiment_id)
    assert f"/#/experiments/{exp.experiment_id}/runs?" in url and "workflowType=machine_learning" in url
    assert f"viewStateShareKey={tracking.VIEW_KEY}" in url


@pytest.mark.slow
def test_train_and_evaluate_share_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_file = tmp_path / "artifacts" / "train" / "mlflow_run.json"
    with tracking.run("train", Params(), run_id_file=run_file) as tr:
        tr.metric("val_ndcg@10", 0.5, step=1)
    assert run_file.exists()
    # a param that changed since train: the run keeps the first value, the new one is logged under the stage's name
    params = dataclasses.replace(Params(), loss=dataclasses.replace(Params().loss, margin_mse=0.9))
    with tracking.run("evaluate", params, run_id_file=run_file, resume=True) as tr:
        tr.metrics({"nDCG@10": 0.7}, prefix="test.kd.")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["val_ndcg_at_10"] == 0.5 and run.data.metrics["test.kd.nDCG_at_10"] == 0.7
    assert run.data.params["loss.margin_mse"] == "0.6" and run.data.params["evaluate.loss.margin_mse"] == "0.9"
    assert run.data.tags["stages"] == "train,evaluate" and run.info.status == "FINISHED"

    # a run id that the store does not hold (another store, a deleted run): evaluate starts its own run
    run_file.write_text('{"run_id": "0123456789abcdef0123456789abcdef"}\n')
    with tracking.run("evaluate", Params(), run_id_file=run_file, resume=True):
        pass
    assert len(client.search_runs([exp.experiment_id])) == 2


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_mlflow_ui_shows_runs_best_test_ndcg_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: Any) -> None:
    """What a person sees: `mlflow ui` (the command README gives) in a real browser at `tracking.ui_url`."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name, test_ndcg, dev_ndcg in (("exp-high", 0.5987, 0.6422), ("exp-low", 0.5123, 0.6311)):  # newest first by default
        monkeypatch.setenv("DVC_EXP_NAME", name)
        with tracking.run("evaluate", Params()) as tr:
            tr.metrics({"nDCG@10": test_ndcg}, prefix="test.kd.")
            tr.metrics({"nDCG@10": dev_ndcg}, prefix="dev.kd.")
    exp = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(tracking.EXPERIMENT)
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--workers", "1", "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        browser.get(tracking.ui_url(exp.experiment_id, base))
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 90).until(lambda d: "exp-low" in d.find_element("tag name", "body").text)
        text = browser.find_element("tag name", "body").text
        assert "test.kd.nDCG_at_10" in text and "dev.kd.nDCG_at_10" in text  # the saved view's columns
        assert "0.5987" in text and "0.6422" in text  # the values, not only the headers
        assert text.index("exp-high") < text.index("exp-low")  # the view's sort: best test nDCG@10 first
    finally:
        ui.terminate()
        ui.wait(timeout=30)
