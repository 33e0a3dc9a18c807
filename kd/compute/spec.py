"""What a bulk pass runs: the model as plain, picklable config (`ModelSpec`), the `compute.*` checks, and
the one log line each pass leaves (`pass_record`, read by `bench.stage_times`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd.config import COMPUTE_BACKENDS, ComputeConfig, ModelConfig
from kd.errors import ConfigError, KDError
from kd.models.runtime import corpus_backend_for, kernel, use_bf16
from kd.models.store import model_fingerprint, resolve
from kd.models.student_families import initial_student

log = logging.getLogger(__name__)


ROLES = ("student", "teacher")
ADDRESS_FIX = (
    "start the head node there (`ray start --head --port=6379`), check host, port and firewall, "
    "or run on this machine with compute.address=local (or compute=local)"
)


class ComputeError(KDError):
    """A Ray cluster that cannot run the pass: unreachable, too small, or a worker that keeps dying."""


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads, as plain config: picklable, so Ray ships this instead of the model.

    `role=student`: `kd.models.backends.load_student(model_dir or cfg.model, cfg.corpus_backend, ...)`;
    `role=teacher`: `kd.models.teacher.load_teacher(cfg)` (bi- or cross-encoder). `text` picks the prefix
    `encode_texts` applies: `passage` or `query`.
    """

    cfg: ModelConfig
    role: str = "teacher"
    model_dir: str | None = None
    text: str = "passage"

    @classmethod
    def student(cls, cfg: ModelConfig, model_dir: str | Path | None = None, text: str = "passage") -> ModelSpec:
        """The student: the trained folder `model_dir`, or (None) the untrained student of `cfg`.

        Args:
            cfg: the `student` config section.
            model_dir: a sentence-transformers folder (made absolute: Ray workers run elsewhere), or
                None for the untrained student (a packaged name, or a cut/static model built once).
            text: `passage` or `query`: which prefix the encode applies.
        """
        # absolute: a Ray worker's working directory is not the driver's (on a cluster the folder must
        # exist on every node: a shared filesystem, or the same `dvc pull` on each)
        if model_dir is None:  # the untrained student: a packaged name, or a cut/static model built once
            model_dir = initial_student(cfg)
        local = Path(model_dir).is_dir()
        return cls(cfg, "student", str(Path(model_dir).resolve()) if local else str(model_dir), text)

    @classmethod
    def teacher(cls, cfg: ModelConfig, text: str = "passage") -> ModelSpec:
        """The teacher of `cfg` (the `teacher` section); `text` as for `student`."""
        return cls(cfg, "teacher", None, text)

    def corpus_backend(self) -> str:
        """The backend this spec's passes run on here (`corpus_backend` with `auto` resolved for this CPU)."""
        return corpus_backend_for(self.cfg.corpus_backend, self.cfg.kind == "static")

    def key(self) -> str:
        """Everything that changes the numbers: the config and the model folder's content."""
        path = Path(resolve(self.model_dir or self.cfg.model))
        content = model_fingerprint(path) if path.is_dir() else "hub:" + str(path)
        cfg = dataclasses.replace(self.cfg, corpus_backend=self.corpus_backend())  # `auto` as it runs here
        fields = json.dumps({**dataclasses.asdict(self), "cfg": changed_fields(cfg)}, sort_keys=True)
        bf16 = "bfloat16" if use_bf16(self.cfg.dtype) else "float32"
        return hashlib.sha1(f"{fields}\x1f{content}\x1f{bf16}".encode()).hexdigest()[:16]


def changed_fields(cfg: Any) -> dict[str, Any]:
    """The fields of a config dataclass that differ from their defaults.

    Cache keys hash these rather than every field, so adding a config key (at a default that keeps
    today's behaviour) leaves every cached pass valid.
    """
    out = {}
    for f in dataclasses.fields(cfg):
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        value = getattr(cfg, f.name)
        if value != default:
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    return out


def check(cfg: ComputeConfig) -> None:
    """Reject bad `compute.*` values up front, naming the key."""
    if cfg.backend not in COMPUTE_BACKENDS:
        raise ConfigError(
            f"compute.backend={cfg.backend!r} is unknown: use {' or '.join(COMPUTE_BACKENDS)} "
            "(conf/compute/, or `dvc exp run -S compute=ray`)"
        )
    for key in ("actors", "batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"compute.{key}={getattr(cfg, key)} must be >= 1 (conf/compute/{cfg.backend}.yaml)")
    if cfg.cpus_per_actor <= 0 or cfg.gpus_per_actor < 0 or cfg.max_retries < 0:
        raise ConfigError(
            f"compute.cpus_per_actor={cfg.cpus_per_actor} must be > 0, compute.gpus_per_actor="
            f"{cfg.gpus_per_actor} and compute.max_retries={cfg.max_retries} >= 0 (conf/compute/{cfg.backend}.yaml)"
        )


PASS_PREFIX = "pass:"  # bench.stage_times reads these lines from each stage's log


def kernel_path(spec: ModelSpec) -> str:
    """The arithmetic a pass of `spec` runs on this CPU: `torch/bfloat16`, `torch/float32`, `onnx/float32` or `onnx/int8`."""
    backend = spec.corpus_backend() if spec.text == "passage" or spec.role == "student" else "torch"
    return "/".join(kernel(backend, spec.cfg.dtype))


def pass_record(op: str, spec: ModelSpec, items: int, computed: int, seconds: float) -> str:
    """One log line per pass: what ran, how much came from the kept shards, the rate and the kernel path.

    Example: `pass: encode role=teacher model=mpnet items=9342 computed=9342 seconds=1870.2
    per_s=5.0 kernel=torch/float32`.
    """
    rate = computed / seconds if computed and seconds > 0 else 0.0
    return (f"{PASS_PREFIX} {op} role={spec.role} model={spec.cfg.model} items={items} computed={computed} "
            f"seconds={seconds:.1f} per_s={rate:.1f} kernel={kernel_path(spec)}")  # fmt: skip
