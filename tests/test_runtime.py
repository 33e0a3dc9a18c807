"""kd.models.runtime: int8 config and bf16 choice from CPU flags, thread pools, the dtype vocabulary."""

from __future__ import annotations

import pytest

from kd.config import check_dtype
from kd.errors import ConfigError
from kd.models import runtime


def test_pick_quant_config() -> None:
    assert runtime.pick_quant_config({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert runtime.pick_quant_config({"avx2", "avx512f", "avx512bw"}, "x86_64") == "avx512"
    assert runtime.pick_quant_config({"avx2"}, "x86_64") == "avx2"
    assert runtime.pick_quant_config(set(), "x86_64") == "avx2"
    assert runtime.pick_quant_config(set(), "aarch64") == "arm64"


def test_configure_threads() -> None:
    import faiss
    import torch

    before = torch.get_num_threads()
    try:
        settings = runtime.configure_threads(1)
        assert settings.torch == settings.faiss == settings.onnxruntime == 1
        assert torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1
        assert runtime.ort_session_options().intra_op_num_threads == 1
        with pytest.raises(ConfigError):
            runtime.configure_threads(0)
    finally:
        runtime.configure_threads(before)


def test_use_bf16_follows_setting_and_cpu_flags() -> None:
    assert runtime.use_bf16("auto", flags={"avx512f", "avx512_bf16"})
    assert runtime.use_bf16("auto", flags={"amx_bf16"})
    assert not runtime.use_bf16("auto", flags={"avx2", "avx512f"})
    assert runtime.use_bf16("bfloat16", flags=set()) and not runtime.use_bf16("float32", flags={"avx512_bf16"})
    with pytest.raises(ConfigError, match=r"teacher\.dtype"):
        check_dtype("fp16", "teacher.dtype")


def test_corpus_backend_auto_is_torch_with_bf16_else_int8() -> None:
    assert runtime.corpus_backend_for("auto", flags={"avx512f", "avx512_bf16"}) == "torch"
    assert runtime.corpus_backend_for("auto", flags={"avx2", "fma"}) == "onnx-int8"
    assert runtime.corpus_backend_for("auto", static=True, flags={"avx2"}) == "torch"  # a lookup: nothing to quantize
    assert runtime.corpus_backend_for("onnx", flags={"avx512_bf16"}) == "onnx"  # an explicit choice is kept


def test_kernel_names_the_arithmetic_of_each_backend() -> None:
    assert runtime.kernel("torch", "bfloat16") == ("torch", "bfloat16")
    assert runtime.kernel("torch", "float32") == ("torch", "float32")
    assert runtime.kernel("onnx-int8", "bfloat16") == ("onnx", "int8")  # ONNX ignores the torch dtype
    assert runtime.kernel("onnx", "auto") == ("onnx", "float32")
