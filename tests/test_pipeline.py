"""The real pipeline: `dvc exp run -S +experiment=smoke` in a temporary copy, its outputs, tracking and errors."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kd.data.io import read_dataset
from kd.retrieval.metrics import read_trec
from tests.pipeline_fixtures import sh

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

SYSTEMS = ("bm25", "untrained", "kd", "teacher")


def declared_outputs(repo: Path) -> list[Path]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(repo / (entry if isinstance(entry, str) else next(iter(entry))))
    return paths


def test_every_declared_output_exists(smoke_repo: Path) -> None:
    outs = declared_outputs(smoke_repo)
    assert len(outs) >= 12
    missing = [str(p.relative_to(smoke_repo)) for p in outs if not p.exists()]
    assert not missing
    assert (smoke_repo / "artifacts/student/model.safetensors").exists()
    assert {p.name for p in (smoke_repo / "artifacts/index").iterdir()} >= {
        "faiss.index", "docids.json", "passages.jsonl", "meta.json",
    }  # fmt: skip


def test_hydra_composed_the_smoke_params(smoke_repo: Path) -> None:
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    assert params["data"]["max_passages"] == 200  # from conf/experiment/smoke.yaml
    ds = read_dataset(smoke_repo / "data")
    assert len(ds.corpus) <= 200 and len(ds.queries["test"]) == params["data"]["max_test_queries"]


def test_metrics_table(smoke_repo: Path) -> None:
    metrics = json.loads((smoke_repo / "metrics.json").read_text())
    ds = read_dataset(smoke_repo / "data")
    for split in ("dev", "test"):
        table = metrics[split]["table"]
        rerank = [name for name in table if name.startswith("kd+rerank@")]
        assert set(SYSTEMS) <= set(table) and len(rerank) == 1
        for values in table.values():
            assert set(values) == {"nDCG@10", "MRR@10", "Recall@100"}
            assert all(0.0 <= v <= 1.0 for v in values.values())
        assert table["untrained"]["nDCG@10"] > table["bm25"]["nDCG@10"] - 0.2  # a sane dense baseline
        assert 0.0 <= metrics[split]["kd_vs_untrained_ndcg@10"]["t_pvalue"] <= 1.0
        kd, teacher = table["kd"]["nDCG@10"], table["teacher"]["nDCG@10"]
        assert metrics[split]["student_over_teacher"] == pytest.approx(kd / teacher)
        assert metrics["queries"][split] == len(ds.queries[split])
    shown = sh(["dvc", "metrics", "show", "--json"], smoke_repo).stdout
    assert "gap_closed" in shown and "student_over_teacher" in shown and "kd_vs_untrained" in shown


def test_runs_are_trec_files_cut_consistently(smoke_repo: Path) -> None:
    for split in ("dev", "test"):
        runs = sorted((smoke_repo / "artifacts/runs" / split).glob("*.trec"))
        assert {p.stem for p in runs} >= set(SYSTEMS)
    first = (smoke_repo / "artifacts/runs/test/kd.trec").read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "kd"
    kd_run = read_trec(smoke_repo / "artifacts/runs/test/kd.trec")
    assert all(len(docs) <= 100 for docs in kd_run.values())


def test_training_curves_and_plots(smoke_repo: Path) -> None:
    loss = pd.read_csv(smoke_repo / "artifacts/train/loss.csv")
    assert {"step", "total", "margin_mse", "listwise_kl", "in_batch"} <= set(loss.columns)
    dev = pd.read_csv(smoke_repo / "artifacts/train/dev.csv")
    assert dev["epoch"].tolist()[0] == 0 and len(dev) >= 2  # untrained + each epoch
    mixes = pd.read_csv(smoke_repo / "artifacts/train/interpolate.csv")  # WiSE-FT: untrained, the saved mix, trained
    summary = json.loads((smoke_repo / "artifacts/train/metrics.json").read_text())
    assert mixes["interpolate"].tolist() == [0.0, summary["interpolate"], 1.0] and summary["interpolate"] == 0.5
    assert mixes["dev_ndcg@10"].tolist() == pytest.approx(
        [dev["dev_ndcg@10"].iloc[0], summary["dev_pool_ndcg@10"], summary["best_dev_pool_ndcg@10"]]
    )
    html = smoke_repo / "plots.html"
    sh(["dvc", "plots", "show", "-o", str(html.parent / "dvc_plots")], smoke_repo)
    assert (html.parent / "dvc_plots" / "index.html").exists()


def test_mlflow_has_one_run_with_train_and_evaluate(smoke_repo: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{smoke_repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kd-search")
    runs = client.search_runs([exp.experiment_id])
    (run,) = [r for r in runs if "train" in r.data.tags.get("stages", "")]
    assert run.data.tags["stages"] == "train,evaluate"  # evaluate logged into train's run: one row
    assert run.data.params["loss.margin_mse"] == "0.6"
    assert "dev_pool_ndcg_at_10" in run.data.metrics and "loss_total" in run.data.metrics
    assert "test.kd.nDCG_at_10" in run.data.metrics and "dev.gap_closed" in run.data.metrics
    assert run.data.tags["dvc_experiment"]  # `dvc exp run` names the experiment
    history = client.get_metric_history(run.info.run_id, "dev_pool_ndcg_at_10")
    assert len(history) >= 2


def test_unknown_config_names_are_reported(smoke_repo: Path) -> None:
    proc = sh(["dvc", "exp", "run", "-S", "teacher=no_such_teacher"], smoke_repo, check=False)
    out = proc.stdout + proc.stderr
    assert "teacher/no_such_teacher" in out and "mpnet" in out  # names the key and the options
    proc = sh(["dvc", "exp", "run", "-S", "loss.margin_msee=1"], smoke_repo, check=False)
    assert "margin_msee" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture()
def scratch(smoke_repo: Path, tmp_path: Path) -> Path:
    """A workspace with the smoke params and data, but none of the later stage outputs."""
    shutil.copy(smoke_repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(smoke_repo / "data", tmp_path / "data")
    (tmp_path / "artifacts/bm25").mkdir(parents=True)
    shutil.copytree(smoke_repo / "artifacts/bm25/runs", tmp_path / "artifacts/bm25/runs")
    return tmp_path


def run_stage(name: str, cwd: Path, cache: Path) -> tuple[int, str]:
    import sys

    proc = sh([sys.executable, "-m", f"stages.{name}"], cwd, cache, check=False)
    return proc.returncode, proc.stderr


def with_pythonpath(cwd: Path) -> None:
    """Stage scripts run as `python -m stages.X` from the workspace root."""
    (cwd / "stages").symlink_to(Path(__file__).resolve().parent.parent / "stages")


def test_missing_stage_input_names_file_and_stage(scratch: Path, smoke_cache: Path) -> None:
    with_pythonpath(scratch)
    code, err = run_stage("train", scratch, smoke_cache)
    assert code == 2 and "artifacts/teacher_scores.parquet" in err and "dvc repro teacher" in err
    assert "Traceback" not in err
    code, err = run_stage("index", scratch, smoke_cache)
    assert code == 2 and "dvc repro train" in err


def test_teacher_that_cannot_load(scratch: Path, smoke_cache: Path) -> None:
    with_pythonpath(scratch)
    params = yaml.safe_load((scratch / "params.yaml").read_text())
    params["teacher"]["model"] = "no-such-org/no-such-model"
    (scratch / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = run_stage("negatives", scratch, smoke_cache)
    assert code == 2 and "no-such-org/no-such-model" in err and "Traceback" not in err
    assert not (scratch / "artifacts/negatives.parquet").exists()


def test_empty_negatives_file(scratch: Path, smoke_cache: Path) -> None:
    with_pythonpath(scratch)
    pd.DataFrame({"qid": [], "pos_id": [], "neg_ids": [], "sources": []}).to_parquet(
        scratch / "artifacts/negatives.parquet"
    )
    code, err = run_stage("teacher", scratch, smoke_cache)
    assert code == 2 and "artifacts/negatives.parquet is empty" in err
    assert not (scratch / "artifacts/teacher_scores.parquet").exists()  # nothing half-written
