"""The student from the MLflow model registry: register (kd.tracking.register_student), alias, serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from kd import tracking
from kd.errors import ConfigError
from kd.params import load_params
from service.app import create_app
from service.registry import parse
from service.settings import Settings
from service.startup import load_engine


def test_registry_uri_parsing() -> None:
    assert parse("models:/kd-student@production") == ("kd-student", "production", None)
    assert parse("models:/kd-student/3") == ("kd-student", None, "3")
    for bad in ("artifacts/student", "models:/", "models:/x@", "runs:/abc/student"):
        with pytest.raises(ConfigError, match="models:/<name>@<alias>"):
            parse(bad)


@pytest.mark.slow
def test_serve_registered_version(smoke_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # the run's artifacts (./mlruns) land here, not in the checkout
    params = load_params(smoke_repo / "params.yaml")
    student_dir = smoke_repo / "artifacts/student"
    with tracking.run("train", params):
        version = tracking.register_student(student_dir)
    assert version == "1"
    MlflowClient().set_registered_model_alias(tracking.STUDENT_MODEL, "production", version)

    index_dir = smoke_repo / "artifacts/index"
    settings = Settings(student_dir, index_dir, params, rerank=False, student_model="models:/kd-student@production")
    engine = load_engine(settings)
    dvc = load_engine(Settings(student_dir, index_dir, params, rerank=False))
    with TestClient(create_app(settings, engine=engine)) as c:
        ready = c.get("/ready").json()
        assert ready["student"]["source"] == "registry"
        assert ready["student"]["registry"]["version"] == "1" and ready["student"]["registry"]["alias"] == "production"
        assert ready["student"]["name"] == "kd-student/1" and str(tmp_path) not in str(ready)
        hits = c.post("/search", json={"query": "Why is it called Python?", "k": 5}).json()["results"]
    expected = dvc.search(["Why is it called Python?"], 5)[0]
    assert [h["doc_id"] for h in hits] == [dvc.passages[r]["_id"] for r, _ in expected]  # the same weights

    missing = Settings(student_dir, index_dir, params, rerank=False, student_model="models:/kd-student@staging")
    with pytest.raises(ConfigError, match=r"@staging.*set_registered_model_alias"):
        load_engine(missing)
    with pytest.raises(ConfigError, match="no alias @x of model 'nope'|no alias @x"):
        load_engine(Settings(student_dir, index_dir, params, rerank=False, student_model="models:/nope@x"))
