"""kd.models.store: config names resolve to local folders offline; fingerprints follow file content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from safetensors import safe_open

from kd.models.store import minilm_path, model_fingerprint, resolve, tiny_cross_encoder_path


def test_resolve_packaged_name_local_folder_and_hub_id(tmp_path: Path) -> None:
    assert Path(resolve("minilm")) == minilm_path()
    assert (minilm_path() / "config.json").is_file()
    assert resolve(str(tmp_path)) == str(tmp_path)
    assert resolve("intfloat/e5-small-v2") == "intfloat/e5-small-v2"  # not here: sentence-transformers' job


def test_fingerprint_follows_content_and_names_not_mtimes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = model_fingerprint(tmp_path)
    os.utime(tmp_path / "model.safetensors", (0, 0))  # DVC may restore a checkpoint with old mtimes
    assert model_fingerprint(tmp_path) == first
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"an export of the same weights")
    assert model_fingerprint(tmp_path) == first  # exports live beside the model and are keyed by it
    (tmp_path / "model.safetensors").rename(tmp_path / "other.safetensors")
    assert model_fingerprint(tmp_path) != first
    (tmp_path / "other.safetensors").rename(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert model_fingerprint(tmp_path) != first


@pytest.mark.slow
def test_tiny_cross_encoder_is_built_once_with_its_head_saved(tmp_path: Path) -> None:
    path = tiny_cross_encoder_path(tmp_path)
    with safe_open(str(path / "model.safetensors"), "pt") as fh:
        assert {"classifier.weight", "classifier.bias"} <= set(fh.keys())  # fitted, not left to random init
    stamp = model_fingerprint(path)
    assert tiny_cross_encoder_path(tmp_path) == path and model_fingerprint(path) == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp folder left behind


def test_assembled_models_live_in_the_repositorys_cache_folder() -> None:
    """README: the first run assembles the teacher into `.cache/models/` at the repository root (git-ignored)."""
    from kd.models.store import MODEL_CACHE
    from tests.conftest import ROOT

    assert MODEL_CACHE == ROOT / ".cache" / "models"
