"""`params.yaml` -> typed `Params`: merged onto the schema in `kd.config`, then checked across sections.

Stages read `params.yaml` (written by DVC's Hydra integration from `conf/`) through `load_params`, so a
misspelt or missing key, or a combination no stage can run (an asymmetric index with a student of
another width, a cross-encoder teacher where its embeddings are needed), fails here with the key's name
and the fix, not deep inside a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from kd.choices import (
    PASSAGE_SOURCES,
    STUDENT_KINDS,
    check_backend,
    check_corpus_backend,
    check_dtype,
    check_layers,
    check_score_norm,
)
from kd.config import DATA_SOURCES, MINING_SOURCES, DataConfig, ModelConfig, Params
from kd.errors import ConfigError

PARAMS_FILE = Path("params.yaml")


def _writable(node: DictConfig) -> DictConfig:
    """Frozen dataclasses make read-only nodes; the schema must accept the merge first."""
    node._set_flag("readonly", None)
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
        elif child is not None:
            child._set_flag("readonly", None)
    return node


def params_from_dict(raw: dict[str, Any]) -> Params:
    """The typed params: `raw` merged onto the dataclass schema (OmegaConf structured config), then checked.

    The data section's schema is the source's own class (`data.name` picks it from DATA_SOURCES), so
    `data=msmarco` carries no FAQ keys. Unknown keys, wrong types and unset required keys fail naming the key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"params must be a mapping of sections, got {raw!r}")
    for section, value in raw.items():
        if section in Params.__dataclass_fields__ and section != "seed" and not isinstance(value, dict | None):
            raise ConfigError(f"params section '{section}' must be a mapping of keys, got {value!r} (conf/{section}/)")
    data = raw.get("data") or {}
    name = data.get("name", DataConfig.name) if isinstance(data, dict) else None
    if name not in DATA_SOURCES:
        raise ConfigError(
            f"data.name={name!r} is unknown: use one of {', '.join(DATA_SOURCES)} (conf/data/, or -S data=beir_dir)"
        )
    schema = _writable(OmegaConf.structured(Params(data=DATA_SOURCES[name]())))
    try:
        merged = OmegaConf.merge(schema, raw)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(
                f"params key(s) {', '.join(repr(k) for k in missing)} required but unset. "
                f"Set them in conf/ or with `dvc exp run -S {missing[0]}=...`."
            )
        params = OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        key = exc.full_key or str(exc)
        section = key.rpartition(".")[0]
        node = OmegaConf.select(schema, section) if section else schema
        known = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(
            f"unknown params key '{key}'. Known keys in '{section or 'root'}': {', '.join(known)}. "
            "Check the spelling in conf/ or your -S override."
        ) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        detail = str(exc).splitlines()[0]
        raise ConfigError(
            f"params key '{key}' has a bad value ({detail}). Fix it in conf/ (or with `dvc exp run -S {key}=...`)."
        ) from None
    assert isinstance(params, Params)

    check_backend(params.student.backend)  # ConfigError naming student.backend
    check_corpus_backend(params.student.corpus_backend, "student.corpus_backend")
    check_corpus_backend(params.teacher.corpus_backend, "teacher.corpus_backend")
    if params.teacher.kind != "bi_encoder" and params.teacher.corpus_backend not in ("auto", "torch"):
        raise ConfigError(
            f"teacher.corpus_backend={params.teacher.corpus_backend!r}: teacher.kind={params.teacher.kind} has no "
            "corpus pass (it scores pairs); set teacher.corpus_backend to torch or auto (conf/teacher/)"
        )
    check_dtype(params.student.dtype, "student.dtype")
    check_dtype(params.teacher.dtype, "teacher.dtype")
    check_dtype(params.train.dtype, "train.dtype")
    for backend in params.eval.backends:
        check_backend(backend, "eval.backends")
    sources = params.mining.sources
    if not isinstance(sources, list) or not sources or any(s not in MINING_SOURCES for s in sources):
        raise ConfigError(
            f"mining.sources={sources!r} must be a non-empty list drawn from {', '.join(MINING_SOURCES)} "
            "(conf/mining/, or `dvc exp run -S 'mining.sources=[bm25,dense]'`)"
        )
    check_student_family(params.student)
    check_passages(params)
    if params.train.corpus_epochs < 0:
        raise ConfigError(f"train.corpus_epochs={params.train.corpus_epochs} must be >= 0 (0: no corpus embedding fit)")
    check_score_norm(params.teacher.score_norm)
    if params.teacher.kind != "bi_encoder":
        needs_view = {
            "mining.sources contains 'teacher'": "teacher" in sources,
            f"mining.pseudo_queries={params.mining.pseudo_queries}": params.mining.pseudo_queries > 0,
            f"loss.sim_kl={params.loss.sim_kl}": params.loss.sim_kl > 0,
            f"loss.sim_mse={params.loss.sim_mse}": params.loss.sim_mse > 0,
            f"loss.embed={params.loss.embed}": params.loss.embed > 0,
        }
        bad = [k for k, v in needs_view.items() if v]
        if bad:
            raise ConfigError(
                f"{', '.join(bad)} need(s) the teacher's passage embeddings, but teacher.kind={params.teacher.kind!r} "
                "has none. With a cross-encoder teacher use mining.sources=[bm25] (or [bm25,dense]), "
                "mining.pseudo_queries=0, loss.sim_kl=0, loss.sim_mse=0 and loss.embed=0."
            )
    return params


def check_student_family(cfg: ModelConfig) -> None:
    """The student's kind and its family's keys: a static table has no layers; a transformer no table width."""
    if cfg.kind not in STUDENT_KINDS:
        raise ConfigError(
            f"student.kind={cfg.kind!r} is unknown: use bi_encoder (a transformer checkpoint) or static "
            "(a token-embedding table distilled from student.model; conf/student/static.yaml)"
        )
    check_layers(cfg.layers)
    if cfg.kind == "static":
        if cfg.layers is not None:
            raise ConfigError("student.layers applies to transformer students; a static student has none: set it to null")
        if cfg.backend != "torch" or cfg.corpus_backend not in ("torch", "auto"):
            raise ConfigError(
                f"student.backend={cfg.backend!r} / student.corpus_backend={cfg.corpus_backend!r}: a static student "
                "is an embedding lookup with no ONNX export (nothing to quantize); set both to torch "
                "(conf/student/static.yaml)"
            )
    elif cfg.dim is not None:
        raise ConfigError(f"student.dim={cfg.dim} applies to static students only (student.kind=static): set it to null")
    if cfg.dim is not None and cfg.dim < 1:
        raise ConfigError(f"student.dim={cfg.dim} must be >= 1, or null to keep the source model's width")
    if cfg.learning_rate is not None and cfg.learning_rate <= 0:
        raise ConfigError(f"student.learning_rate={cfg.learning_rate} must be > 0, or null to use train.learning_rate")


def check_passages(p: Params) -> None:
    """`index.passages=teacher` (asymmetric serving) needs a bi-encoder teacher and a student in its space.

    A student is in the teacher's space when it comes from the teacher's own checkpoint: the checkpoint
    itself or some of its layers (`student.model` = `teacher.model`), or a static table distilled from it
    at its own width (`student.kind=static`, `student.dim=null`). Dimensions are checked again against the
    teacher's matrix when the index is built.
    """
    mode = p.index.passages
    if mode not in PASSAGE_SOURCES:
        raise ConfigError(
            f"index.passages={mode!r} is unknown: use student (the student encodes the corpus) or teacher "
            "(the teacher's passage matrix is the index; the student encodes queries only)"
        )
    if mode != "teacher":
        return
    if p.teacher.kind != "bi_encoder":
        raise ConfigError(
            f"index.passages=teacher needs the teacher's passage embeddings, but teacher.kind={p.teacher.kind!r} "
            "has none (a cross-encoder scores pairs): use index.passages=student, or a bi-encoder teacher"
        )
    if p.student.model != p.teacher.model:
        raise ConfigError(
            f"index.passages=teacher: student.model={p.student.model!r} is not in the space of "
            f"teacher.model={p.teacher.model!r}, so its queries cannot search the teacher's passages. Use a student "
            f"made from the teacher (student=static or student=mpnet_l4 with student.model={p.teacher.model!r}), "
            "or index.passages=student"
        )
    if p.student.kind == "static" and p.student.dim is not None:
        raise ConfigError(
            f"index.passages=teacher: student.dim={p.student.dim} makes a table narrower or wider than the "
            "teacher's embeddings; set student.dim=null (the teacher's width), or use index.passages=student"
        )


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """The typed params read from the YAML file `path` (default params.yaml), checked by `params_from_dict`.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or its params fail the checks.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path} not found. Run from the repository root, or regenerate it with "
            "`python -m kd.compose > params.yaml`."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return params_from_dict(raw or {})
