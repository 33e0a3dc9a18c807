"""kd.models.runtime: int8 config and bf16 choice from CPU flags, thread pools, the dtype vocabulary."""

from __future__ import annotations

import json

import pytest

from kd.choices import check_dtype
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


def test_use_bf16_needs_the_flag_and_a_measured_speedup() -> None:
    fast, slow = runtime.BF16_MIN_SPEEDUP + 1.0, 0.57  # an EPYC with avx512_bf16 measures ~2x; an Intel Xeon without AMX 0.57x
    assert runtime.use_bf16("auto", flags={"avx512f", "avx512_bf16"}, speedup=fast)
    assert runtime.use_bf16("auto", flags={"amx_bf16"}, speedup=fast)
    assert not runtime.use_bf16("auto", flags={"avx512f", "avx512_bf16"}, speedup=slow)  # the flag alone is not enough
    assert not runtime.use_bf16("auto", flags={"avx2", "avx512f"}, speedup=fast)  # emulated bf16: never
    assert runtime.use_bf16("bfloat16", flags=set()) and not runtime.use_bf16("float32", flags={"avx512_bf16"})
    with pytest.raises(ConfigError, match=r"teacher\.dtype"):
        check_dtype("fp16", "teacher.dtype")


def test_bf16_speedup_is_measured_once_and_kept(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The measurement is real (torch on this CPU); its value is kept, so every later stage decides alike."""
    assert runtime.measure_bf16_speedup(reps=1) > 0
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    runtime.bf16_speedup.cache_clear()
    try:
        first = runtime.bf16_speedup()
        (kept,) = (tmp_path / "runtime").glob("bf16-speedup-*.json")
        assert json.loads(kept.read_text())["speedup"] == first
        kept.write_text(json.dumps({"speedup": 7.5}))
        runtime.bf16_speedup.cache_clear()
        assert runtime.bf16_speedup() == 7.5  # read back, not measured again
        monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
        runtime.bf16_speedup.cache_clear()
        assert runtime.bf16_speedup() == 0.0  # no native bf16: nothing to measure
    finally:
        runtime.bf16_speedup.cache_clear()


def test_corpus_backend_auto_is_torch_where_bf16_pays_else_int8() -> None:
    assert runtime.corpus_backend_for("auto", flags={"avx512f", "avx512_bf16"}, speedup=2.0) == "torch"
    assert runtime.corpus_backend_for("auto", flags={"avx512f", "avx512_bf16"}, speedup=0.57) == "onnx-int8"
    assert runtime.corpus_backend_for("auto", flags={"avx2", "fma"}) == "onnx-int8"
    assert runtime.corpus_backend_for("auto", static=True, flags={"avx2"}) == "torch"  # a lookup: nothing to quantize
    assert runtime.corpus_backend_for("onnx", flags={"avx512_bf16"}) == "onnx"  # an explicit choice is kept


def test_kernel_names_the_arithmetic_of_each_backend() -> None:
    assert runtime.kernel("torch", "bfloat16") == ("torch", "bfloat16")
    assert runtime.kernel("torch", "float32") == ("torch", "float32")
    assert runtime.kernel("onnx-int8", "bfloat16") == ("onnx", "int8")  # ONNX ignores the torch dtype
    assert runtime.kernel("onnx", "auto") == ("onnx", "float32")



def test_corpus_encoder_names_the_teacher_for_an_asymmetric_index() -> None:
    import dataclasses

    from kd.models.runtime import corpus_encoder
    from kd.params import params_from_dict

    p = params_from_dict({"student": {"corpus_backend": "onnx-int8"}})
    assert corpus_encoder(p) == "onnx-int8"
    asym = dataclasses.replace(p, index=dataclasses.replace(p.index, passages="teacher"))
    assert corpus_encoder(asym) == f"teacher {asym.teacher.model} (stage teacher_corpus)"
