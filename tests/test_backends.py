"""Student backends (kd.models.backends): parity of ONNX and int8 with PyTorch, the fast query encoder, bf16."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")

from kd.choices import BACKENDS  # noqa: E402
from kd.errors import ConfigError  # noqa: E402
from kd.models import backends  # noqa: E402
from kd.models.loading import encode
from tests.onnx_fixtures import Exported  # noqa: E402

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


@pytest.fixture(scope="module")
def embeddings(exported: Exported) -> dict[str, np.ndarray]:
    dirs = {"torch": None, "onnx": exported.onnx_dir, "onnx-int8": exported.int8_dir}
    out = {}
    for backend, export_dir in dirs.items():
        model = backends.load_student(exported.src, backend, max_seq_length=128, export_dir=export_dir)
        assert model.max_seq_length == 128
        out[backend] = encode(model, TEXTS + [QUERY, PARAPHRASE, UNRELATED])
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "min_cos"), [("onnx", 0.99), ("onnx-int8", 0.95)])
def test_embeddings_close_to_torch(embeddings: dict[str, np.ndarray], backend: str, min_cos: float) -> None:
    ref, got = embeddings["torch"], embeddings[backend]
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cos = np.einsum("ij,ij->i", ref, got)
    assert cos.min() > min_cos, cos


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_paraphrase_ranks_above_unrelated(embeddings: dict[str, np.ndarray], backend: str) -> None:
    q, para, unrel = embeddings[backend][-3:]
    assert float(q @ para) > float(q @ unrel) + 0.2


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"student\.backend='tensorrt'.*torch, onnx, onnx-int8"):
        backends.load_student(tmp_path, "tensorrt")
    with pytest.raises(ConfigError, match=r"student\.backend"):
        backends.default_export_dir(tmp_path, "openvino")


@pytest.mark.slow
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


@pytest.mark.slow
def test_query_encoder_declines_torch(exported: Exported) -> None:
    model = backends.load_student(exported.src, "torch", max_seq_length=16)
    assert backends.OnnxQueryEncoder.from_model(model) is None


@pytest.mark.slow
def test_bf16_encoding_is_float32_and_close(exported: Exported) -> None:
    """bfloat16 autocast changes speed, not answers: same ranking, cosine to float32 >= 0.999."""
    model = backends.load_student(exported.src, "torch", max_seq_length=128)
    ref = encode(model, TEXTS)
    got = encode(model, TEXTS, dtype="bfloat16")
    assert got.dtype == np.float32
    assert float((ref * got).sum(axis=1).min()) > 0.999
    assert np.array_equal(np.argsort(-(got @ got[0])), np.argsort(-(ref @ ref[0])))
