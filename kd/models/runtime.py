"""What this process runs on: CPU flags (bf16, int8 configs), thread pools, autocast, package versions.

One place answers "how will the maths run here": `use_bf16`/`autocast` pick bfloat16 where the CPU
has it natively and it measured faster than float32, `configure_threads` sets torch, FAISS and ONNX Runtime together, and
`package_versions` records the libraries whose versions change the numbers (cache keys, benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from kd.errors import ConfigError

logger = logging.getLogger(__name__)

QuantConfig = Literal["arm64", "avx2", "avx512", "avx512_vnni"]


QUANT_CONFIGS: Final[tuple[str, ...]] = ("arm64", "avx2", "avx512", "avx512_vnni")


_ORT_THREADS: int | None = None  # set by configure_threads; None = ONNX Runtime's own default


@functools.cache
def cpu_info() -> tuple[str, ...]:
    """The lines of /proc/cpuinfo (none where there is no such file, e.g. macOS), read once per process."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS).

    Read once per process: `autocast` asks on every encode call, the service's rerank per request.
    """
    for line in cpu_info():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


BF16_FLAGS: Final = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX-512/AMX; "bf16" on arm64


def native_bf16(flags: AbstractSet[str] | None = None) -> bool:
    """Whether the CPU flags list a native bf16 instruction (avx512_bf16, amx_bf16; bf16 on arm64)."""
    return bool(BF16_FLAGS & (cpu_flags() if flags is None else flags))


BF16_MIN_SPEEDUP: Final = 1.2  # `auto` runs bfloat16 only where it measured at least this much faster than float32


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (`platform.processor()` elsewhere)."""
    for line in cpu_info():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure_bf16_speedup(reps: int = 5) -> float:
    """float32 time / bfloat16-autocast time of a transformer's feed-forward product (2,048 tokens x 768 ->
    3,072), best of `reps`, at torch's current thread count. Above 1, bf16 autocast is faster here."""
    import time

    import torch

    torch.manual_seed(0)
    layer, x = torch.nn.Linear(768, 3072), torch.randn(2048, 768)

    def best(bf16: bool) -> float:
        times = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            layer(x)  # warm-up: oneDNN picks and caches its kernel
            for _ in range(reps):
                t0 = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - t0)
        return min(times)

    return best(False) / best(True)


@functools.cache
def bf16_speedup() -> float:
    """How much faster bfloat16 autocast runs than float32 on this CPU (`measure_bf16_speedup`); 0.0 where
    the CPU has no native bf16 (it would be emulated: never faster). Measured once per CPU model, flags
    and torch version, and kept in `<cache>/runtime/` so every later run (and stage) decides alike."""
    if not native_bf16():
        return 0.0
    import hashlib
    import json

    import torch

    from kd.atomic import write_text
    from kd.paths import cache_dir

    model = cpu_model()
    ident = json.dumps([model, sorted(cpu_flags()), torch.__version__])
    path = cache_dir() / "runtime" / f"bf16-speedup-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return float(json.loads(path.read_text())["speedup"])
    speedup = round(measure_bf16_speedup(), 3)  # the value kept is the value used, first run and later ones alike
    write_text(path, json.dumps({"speedup": speedup, "cpu": model, "torch": torch.__version__}) + "\n")
    logger.info("bfloat16 autocast runs %.2fx float32 on this CPU (%s): dtype auto uses %s", speedup, model,
                "bfloat16" if speedup >= BF16_MIN_SPEEDUP else "float32")  # fmt: skip
    return speedup


def use_bf16(dtype: str, flags: AbstractSet[str] | None = None, speedup: float | None = None) -> bool:
    """Whether PyTorch work for a model with this `dtype` setting runs in bfloat16.

    "auto": where the CPU has native bf16 *and* bf16 autocast measured at least `BF16_MIN_SPEEDUP` times
    faster than float32 there (`bf16_speedup`; `speedup` overrides the measurement). A bf16 flag alone
    is not enough: on a 2-core AMD EPYC with avx512_bf16 autocast more than doubles encoding (mpnet 5.7 ->
    12.9 passages/s, cosine to float32 >= 0.9999), while on a 2-core Intel Xeon (family 6 model 207) with
    avx512_bf16 and no AMX it is slower (mpnet 9.1 -> 5.7, MiniLM 24.8 -> 15.5 passages/s;
    bench/corpus_kernels.py). Without native bf16 it is emulated and slower: float32.
    """
    if dtype == "auto":
        return native_bf16(flags) and (bf16_speedup() if speedup is None else speedup) >= BF16_MIN_SPEEDUP
    return dtype == "bfloat16"


def corpus_backend_for(
    value: str, static: bool = False, flags: AbstractSet[str] | None = None, speedup: float | None = None
) -> str:
    """The backend a `corpus_backend` setting runs on this CPU.

    `auto`: torch where bf16 autocast pays here (`use_bf16("auto")`), else `onnx-int8` (ONNX Runtime
    dynamic quantization: int8 matrix products, which AVX2 runs natively); a static student (`static`:
    an embedding lookup, nothing to quantize) always torch. Any other value is returned as set.
    """
    if value != "auto":
        return value
    if static or use_bf16("auto", flags, speedup):
        return "torch"
    return "onnx-int8"


def kernel(backend: str, dtype: str) -> tuple[str, str]:
    """The arithmetic a pass runs on this CPU: (runtime, number format), e.g. `("torch", "bfloat16")`,
    `("onnx", "int8")`; `backend` as resolved (`corpus_backend_for`), `dtype` the model's `dtype` key.
    `corpus_encoder` and `kd.compute.spec.kernel_path` both name a pass by it."""
    if backend == "torch":
        return "torch", "bfloat16" if use_bf16(dtype) else "float32"
    return "onnx", "int8" if backend == "onnx-int8" else "float32"


def corpus_encoder(p: Any) -> str:
    """What encoded the index's passages, for metadata and tables: the teacher's pass when
    `index.passages=teacher`, else the student's `torch (bfloat16)`, `torch (float32)`, or the ONNX
    backend's name (`onnx`, `onnx-int8`)."""
    if p.index.passages == "teacher":
        return f"teacher {p.teacher.model} (stage teacher_corpus)"
    backend = corpus_backend_for(str(p.student.corpus_backend), p.student.kind == "static")
    runtime, number = kernel(backend, p.student.dtype)
    return f"{runtime} ({number})" if runtime == "torch" else backend


def autocast(dtype: str) -> contextlib.AbstractContextManager[Any]:
    """torch.autocast to bfloat16 on CPU when `use_bf16(dtype)`, else a no-op (ONNX models ignore it)."""
    if not use_bf16(dtype):
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def pick_quant_config(flags: AbstractSet[str] | None = None, machine: str | None = None) -> QuantConfig:
    """The int8 dynamic-quantization config this CPU runs best.

    VNNI (int8 dot products) > AVX-512 > AVX2. `avx2` is also the fallback for an unknown x86 CPU:
    its u8/u8 scheme is the one that is exact on CPUs without VNNI (no int16 saturation).
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    if "avx2" not in flags:
        logger.warning("no AVX2 in the CPU flags: using the portable avx2 int8 config (may be slow)")
    return "avx2"


def available_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


@dataclass(frozen=True)
class ThreadSettings:
    """The thread counts `configure_threads` set: torch intra-op, torch inter-op (None where it could not be
    set any more), FAISS OpenMP, and ONNX Runtime intra-op (for sessions created later)."""

    torch: int
    torch_interop: int | None
    faiss: int
    onnxruntime: int


def configure_threads(n: int | None = None, faiss_threads: int | None = None) -> ThreadSettings:
    """Set the thread pools of torch, FAISS and (for sessions created later) ONNX Runtime.

    Default `n`: every available core (2 on the machines measured here). That is right for bulk encoding and,
    on a quiet machine, for serving too (the ONNX service at 2 threads: HTTP p50 5.9 vs 7.2 ms at 1 thread).
    Under CPU contention fewer threads can win: a batch-1 torch query took ~10x longer at 2 threads
    than at 1 on the loaded 2-core machine (OpenMP threads wait on a descheduled peer), ONNX Runtime ~1.3x
    (bench/latency.py measures both). More threads than cores only adds contention. `faiss_threads` defaults to `n`; a
    single-query HNSW search runs on one thread whatever it is set to. torch's thread count is
    process-wide, so it also applies to a torch teacher in the same process.
    """
    import faiss
    import torch

    n = available_cores() if n is None else n
    if n < 1:
        raise ConfigError(f"thread count must be >= 1, got {n}")
    faiss_n = n if faiss_threads is None else faiss_threads
    torch.set_num_threads(n)
    interop: int | None = None
    try:
        torch.set_num_interop_threads(1)  # only allowed before any inter-op work has started
        interop = 1
    except RuntimeError:
        interop = None
    faiss.omp_set_num_threads(faiss_n)
    global _ORT_THREADS
    _ORT_THREADS = n
    return ThreadSettings(torch=n, torch_interop=interop, faiss=faiss_n, onnxruntime=n)


def ort_session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options: `threads` intra-op threads (default: `configure_threads`'s)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    n = threads if threads is not None else _ORT_THREADS
    if n is not None:
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


EXPORT_PACKAGES = ("sentence-transformers", "optimum-onnx", "optimum", "onnxruntime", "transformers", "torch")


def package_versions(packages: tuple[str, ...] = EXPORT_PACKAGES) -> dict[str, str]:
    """Installed versions of `packages` (missing ones left out): recorded with exports and benchmarks."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
