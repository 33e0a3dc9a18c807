"""kd.models.onnx_export: the export's layout, its reuse while the checkpoint is unchanged, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")

from kd.errors import ConfigError  # noqa: E402
from kd.models import onnx_export  # noqa: E402
from kd.models.runtime import pick_quant_config  # noqa: E402
from kd.models.store import model_fingerprint  # noqa: E402
from tests.onnx_fixtures import Exported  # noqa: E402


@pytest.mark.slow
def test_export_layout(exported: Exported) -> None:
    assert (exported.onnx_dir / "onnx" / "model.onnx").is_file()  # the plain export int8 quantizes
    assert (exported.onnx_dir / onnx_export.SERVING_FILE).is_file()  # what backend `onnx` loads
    assert (onnx_export.read_marker(exported.onnx_dir) or {}).get("optimization") == "O3"
    int8_files = sorted(p.name for p in (exported.int8_dir / "onnx").glob("*.onnx"))
    assert int8_files == [f"model_qint8_{pick_quant_config()}.onnx"]  # the float model is not kept
    marker = onnx_export.read_marker(exported.int8_dir)
    assert marker is not None and marker["quantize"] is True and marker["recipe"] == "accurate"
    # MiniLM-L6: per layer, attention's two activation MatMuls and the FFN output projection stay float
    assert len(marker["kept_float"]) == 6 * 3
    assert marker["fingerprint"] == model_fingerprint(exported.src)
    leftovers = [p.name for p in exported.onnx_dir.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # atomic: no temp folder left behind


@pytest.mark.slow
def test_export_is_reused(exported: Exported) -> None:
    for out, quantize in ((exported.onnx_dir, False), (exported.int8_dir, True)):
        marker = onnx_export.read_marker(out)
        assert marker is not None
        onnx_file = out / marker["file_name"]
        before = (onnx_file.stat().st_mtime_ns, (out / onnx_export.MARKER).stat().st_mtime_ns)
        assert onnx_export.export_onnx(exported.src, out, quantize=quantize) == out
        after = (onnx_file.stat().st_mtime_ns, (out / onnx_export.MARKER).stat().st_mtime_ns)
        assert after == before


@pytest.mark.slow
def test_changed_checkpoint_is_stale(exported: Exported, tmp_path: Path) -> None:
    src = tmp_path / "student"
    shutil.copytree(exported.src, src)
    assert onnx_export.is_fresh(exported.onnx_dir, model_fingerprint(src), onnx_export.SERVING_FILE)
    (src / "modules.json").write_text((src / "modules.json").read_text() + "\n")
    assert not onnx_export.is_fresh(exported.onnx_dir, model_fingerprint(src), onnx_export.SERVING_FILE)


@pytest.mark.slow
def test_unknown_int8_recipe_is_a_config_error(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe"):
        onnx_export.export_onnx(exported.src, tmp_path / "out", quantize=True, recipe="fast")  # type: ignore[arg-type]


def test_export_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="modules.json"):
        onnx_export.export_onnx(tmp_path, tmp_path / "out")

