"""Student backends (kd.backends): ONNX / int8 export of the packaged MiniLM, parity with PyTorch, reuse."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")

from kd import backends  # noqa: E402
from kd.config import BACKENDS  # noqa: E402
from kd.errors import ConfigError  # noqa: E402
from kd.model_store import minilm_path, model_fingerprint  # noqa: E402
from kd.models import encode
from kd.runtime import pick_quant_config  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "How do I read a text file line by line?",
    "Iterate over the lines of an open file object to read it one line at a time.",
    "The tiger is a large striped cat native to Asia.",
    "What is a list comprehension?",
    "A concise way to build a list from an iterable with an expression and optional filter.",
]
QUERY, PARAPHRASE, UNRELATED = (
    "How can I sort a list in Python?",
    "What is the way to order the items of a Python list?",
    "Penguins live mostly in the southern hemisphere.",
)


@dataclass
class Exported:
    src: Path
    onnx_dir: Path
    int8_dir: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("backends")
    src = root / "student"
    shutil.copytree(minilm_path(), src)
    onnx_dir = backends.export_onnx(src, root / "export-onnx")
    int8_dir = backends.export_onnx(src, root / "export-int8", quantize=True, float_export=onnx_dir)
    return Exported(src, onnx_dir, int8_dir)


@pytest.fixture(scope="module")
def embeddings(exported: Exported) -> dict[str, np.ndarray]:
    dirs = {"torch": None, "onnx": exported.onnx_dir, "onnx-int8": exported.int8_dir}
    out = {}
    for backend, export_dir in dirs.items():
        model = backends.load_student(exported.src, backend, max_seq_length=128, export_dir=export_dir)
        assert model.max_seq_length == 128
        out[backend] = encode(model, TEXTS + [QUERY, PARAPHRASE, UNRELATED])
    return out


def test_export_layout(exported: Exported) -> None:
    assert (exported.onnx_dir / "onnx" / "model.onnx").is_file()  # the plain export int8 quantizes
    assert (exported.onnx_dir / backends.SERVING_FILE).is_file()  # what backend `onnx` loads
    assert (backends.read_marker(exported.onnx_dir) or {}).get("optimization") == "O3"
    int8_files = sorted(p.name for p in (exported.int8_dir / "onnx").glob("*.onnx"))
    assert int8_files == [f"model_qint8_{pick_quant_config()}.onnx"]  # the float model is not kept
    marker = backends.read_marker(exported.int8_dir)
    assert marker is not None and marker["quantize"] is True and marker["recipe"] == "accurate"
    # MiniLM-L6: per layer, attention's two activation MatMuls and the FFN output projection stay float
    assert len(marker["kept_float"]) == 6 * 3
    assert marker["fingerprint"] == model_fingerprint(exported.src)
    leftovers = [p.name for p in exported.onnx_dir.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # atomic: no temp folder left behind


@pytest.mark.parametrize(("backend", "min_cos"), [("onnx", 0.99), ("onnx-int8", 0.95)])
def test_embeddings_close_to_torch(embeddings: dict[str, np.ndarray], backend: str, min_cos: float) -> None:
    ref, got = embeddings["torch"], embeddings[backend]
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cos = np.einsum("ij,ij->i", ref, got)
    assert cos.min() > min_cos, cos


@pytest.mark.parametrize("backend", BACKENDS)
def test_paraphrase_ranks_above_unrelated(embeddings: dict[str, np.ndarray], backend: str) -> None:
    q, para, unrel = embeddings[backend][-3:]
    assert float(q @ para) > float(q @ unrel) + 0.2


def test_export_is_reused(exported: Exported) -> None:
    for out, quantize in ((exported.onnx_dir, False), (exported.int8_dir, True)):
        marker = backends.read_marker(out)
        assert marker is not None
        onnx_file = out / marker["file_name"]
        before = (onnx_file.stat().st_mtime_ns, (out / backends.MARKER).stat().st_mtime_ns)
        assert backends.export_onnx(exported.src, out, quantize=quantize) == out
        after = (onnx_file.stat().st_mtime_ns, (out / backends.MARKER).stat().st_mtime_ns)
        assert after == before


def test_changed_checkpoint_is_stale(exported: Exported, tmp_path: Path) -> None:
    src = tmp_path / "student"
    shutil.copytree(exported.src, src)
    assert backends.is_fresh(exported.onnx_dir, model_fingerprint(src), backends.SERVING_FILE)
    (src / "modules.json").write_text((src / "modules.json").read_text() + "\n")
    assert not backends.is_fresh(exported.onnx_dir, model_fingerprint(src), backends.SERVING_FILE)


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"student\.backend='tensorrt'.*torch, onnx, onnx-int8"):
        backends.load_student(tmp_path, "tensorrt")
    with pytest.raises(ConfigError, match=r"student\.backend"):
        backends.default_export_dir(tmp_path, "openvino")


def test_unknown_int8_recipe_is_a_config_error(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe"):
        backends.export_onnx(exported.src, tmp_path / "out", quantize=True, recipe="fast")  # type: ignore[arg-type]


def test_export_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="modules.json"):
        backends.export_onnx(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_query_encoder_matches_encode(exported: Exported, backend: str) -> None:
    """The service's fast path gives sentence-transformers' own vectors, batch of 1 and a padded batch."""
    export_dir = exported.onnx_dir if backend == "onnx" else exported.int8_dir
    model = backends.load_student(exported.src, backend, max_seq_length=16, export_dir=export_dir)
    fast = backends.OnnxQueryEncoder.from_model(model)
    assert fast is not None
    texts = ["  How do I sort a list?  ", "x", TEXTS[1] * 5]  # whitespace, one token, truncated at 16
    want = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    got = fast(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    # the same batch: dynamic int8 picks its activation scale over the whole padded batch
    one = model.encode(texts[:1], normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(fast(texts[:1]), one, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_query_encoder_declines_torch(exported: Exported) -> None:
    model = backends.load_student(exported.src, "torch", max_seq_length=16)
    assert backends.OnnxQueryEncoder.from_model(model) is None


def test_bf16_encoding_is_float32_and_close(exported: Exported) -> None:
    """bfloat16 autocast changes speed, not answers: same ranking, cosine to float32 >= 0.999."""
    model = backends.load_student(exported.src, "torch", max_seq_length=128)
    ref = encode(model, TEXTS)
    got = encode(model, TEXTS, dtype="bfloat16")
    assert got.dtype == np.float32
    assert float((ref * got).sum(axis=1).min()) > 0.999
    assert np.array_equal(np.argsort(-(got @ got[0])), np.argsort(-(ref @ ref[0])))
