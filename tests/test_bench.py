"""bench/latency.py times the service's own Engine on real artifacts (the smoke run's), not a copy of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import latency


def test_latency_times_the_shipped_engine(smoke_repo: Path, smoke_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KD_CACHE_DIR", str(smoke_cache))
    out = tmp_path / "results"
    rc = latency.main(["--root", str(smoke_repo), "--reps", "5", "--warmup", "1", "--rerank-reps", "3",
                       "--rerank-depth", "20", "--profile", "5", "--out", str(out)])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "latency.json").read_text())
    stats = data["stats"]
    backend = data["params"]["student"]["backend"]
    for call in ("encode", "search", "faiss@10", "faiss@20"):
        assert stats[f"{backend} {call}"]["n"] == 5 and stats[f"{backend} {call}"]["p50"] > 0
    if data["rerank_mode"]:
        assert stats[f"{backend} rerank@20"]["n"] == 3
    # the profile is of the service's code path, by file
    assert "service/engine.py" in (out / "profile_request.txt").read_text()


def test_latency_names_the_missing_artifact(smoke_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((smoke_repo / "params.yaml").read_text())
    with pytest.raises(SystemExit, match=r"artifacts/student.*dvc repro train"):
        latency.main(["--root", str(tmp_path), "--no-rerank", "--out", str(tmp_path / "out")])
