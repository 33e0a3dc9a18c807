"""The packaged MiniLM exported to ONNX and int8 once per test session (tests/test_onnx_export.py and
tests/test_backends.py share it; an export takes ~30 s on 2 cores)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from kd.models import onnx_export
from kd.models.store import minilm_path


@dataclass
class Exported:
    src: Path
    onnx_dir: Path
    int8_dir: Path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("backends")
    src = root / "student"
    shutil.copytree(minilm_path(), src)
    onnx_dir = onnx_export.export_onnx(src, root / "export-onnx")
    int8_dir = onnx_export.export_onnx(src, root / "export-int8", quantize=True, float_export=onnx_dir)
    return Exported(src, onnx_dir, int8_dir)

