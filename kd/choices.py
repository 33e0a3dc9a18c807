"""The vocabularies of config keys that take one of a few words, and their checks: each names the key,
the choices and how to set it. `kd.params` checks a whole `params.yaml` with them; loaders call them
where a value arrives another way (a bench flag, a backend argument).
"""

from __future__ import annotations

from typing import Final, Literal

from kd.errors import ConfigError

Backend = Literal["torch", "onnx", "onnx-int8"]


BACKENDS: Final[tuple[str, ...]] = ("torch", "onnx", "onnx-int8")


def check_backend(backend: str, key: str = "student.backend") -> Backend:
    """`backend` if it is known, else a ConfigError naming the config `key` and the choices."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"{key}={backend!r} is unknown: use one of {', '.join(BACKENDS)} "
            f"(conf/student/, or `dvc exp run -S {key}=onnx`)"
        )
    return backend  # type: ignore[return-value]


CORPUS_BACKENDS: Final[tuple[str, ...]] = ("auto", *BACKENDS)


def check_corpus_backend(value: str, key: str) -> str:
    """`value` if it can encode a corpus (`auto` or a backend), else a ConfigError naming `key`.

    `auto` resolves per CPU (`kd.models.runtime.corpus_backend_for`): torch where bf16 is native, int8 elsewhere.
    """
    if value not in CORPUS_BACKENDS:
        raise ConfigError(
            f"{key}={value!r} is unknown: use one of {', '.join(CORPUS_BACKENDS)} (conf/, or -S {key}=onnx-int8)"
        )
    return value


DTYPES: Final[tuple[str, ...]] = ("auto", "bfloat16", "float32")


def check_dtype(value: str, key: str) -> str:
    """`value` if it is a known compute dtype, else a ConfigError naming `key`."""
    if value not in DTYPES:
        raise ConfigError(f"{key}={value!r} is unknown: use one of {', '.join(DTYPES)} (conf/, or -S {key}=auto)")
    return value


STUDENT_KINDS: Final[tuple[str, ...]] = ("bi_encoder", "static")
PASSAGE_SOURCES: Final[tuple[str, ...]] = ("student", "teacher")


def check_layers(layers: list[int] | None, key: str = "student.layers") -> None:
    """`layers` (transformer layers to keep) must be null or a non-empty, strictly increasing list of indices >= 0.

    Whether the last index exists in the checkpoint is checked when it loads (`kd.models.student_families.cut_layers`).
    """
    if layers is None:
        return
    if not layers:
        raise ConfigError(f"{key}=[] keeps no layer: list the layers to keep, e.g. [0, 2, 5], or null to keep all")
    if any(i < 0 for i in layers):
        raise ConfigError(f"{key}={layers} has a negative index: layers count from 0 (conf/student/)")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"{key}={layers} repeats a layer: each kept layer once, in order (e.g. [0, 2, 5])")
    if list(layers) != sorted(layers):
        raise ConfigError(f"{key}={layers} is out of order: list the kept layers in increasing order ({sorted(layers)})")


SCORE_NORMS: Final[tuple[str, ...]] = ("none", "standardize")


def check_score_norm(value: str, key: str = "teacher.score_norm") -> str:
    """`value` if it is a known per-group normalisation of the teacher's scores, else a ConfigError naming
    `key`."""
    if value not in SCORE_NORMS:
        raise ConfigError(f"{key}={value!r} is unknown: use one of {', '.join(SCORE_NORMS)} (conf/teacher/)")
    return value
