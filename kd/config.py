"""Typed views of `params.yaml`: the one place that knows the keys.

Stages read `params.yaml` (written by DVC's Hydra integration from `conf/`) through `load_params`,
so a misspelt or missing key fails here with the key's name and the fix, not deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import yaml

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


DTYPES: Final[tuple[str, ...]] = ("auto", "bfloat16", "float32")


def check_dtype(value: str, key: str) -> str:
    """`value` if it is a known compute dtype, else a ConfigError naming `key`."""
    if value not in DTYPES:
        raise ConfigError(f"{key}={value!r} is unknown: use one of {', '.join(DTYPES)} (conf/, or -S {key}=auto)")
    return value

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class DataConfig:
    name: str = "python_docs_faq"
    debian_package: str | None = "python3.11-doc"
    doc_dir: str | None = None
    path: str | None = None
    min_words: int = 100
    max_words: int = 150
    max_passages: int | None = None
    max_train_queries: int | None = 600
    max_dev_queries: int | None = None
    max_test_queries: int | None = None
    dev_fraction: float = 0.33  # held-out queries (FAQ; a beir folder without dev qrels) -> dev by a stable id hash
    exclude: list[str] = field(default_factory=lambda: ["whatsnew/"])


@dataclass(frozen=True)
class ModelConfig:
    """A student or teacher model. `model` is a packaged name, a local folder or a hub id."""

    name: str = "minilm"
    model: str = "minilm"
    kind: str = "bi_encoder"
    max_seq_length: int = 256
    batch_size: int = 32
    query_prefix: str = ""
    passage_prefix: str = ""
    chunk_groups: int = 64  # teacher only: groups per kept chunk of the resumable teacher stage
    corpus_chunk: int = 512  # teacher only: passages per kept chunk of the resumable teacher_corpus stage
    backend: str = "torch"  # student only: query encoder (service, eval): torch | onnx | onnx-int8
    corpus_backend: str = "torch"  # student only: what encodes the corpus (stages baseline, index)
    dtype: str = "float32"  # PyTorch inference (encoding): auto (bf16 where the CPU has it natively) | bfloat16 | float32
    score_norm: str = "none"  # teacher only: none | standardize (each group's scores to mean 0, std score_scale)
    score_scale: float = 0.1  # teacher only: the per-group std of standardised scores (a student's cosine spread)
    smoke_model: str = "minilm"  # teacher only: the tiny stand-in of this kind that `+experiment=smoke` uses


@dataclass(frozen=True)
class BM25Config:
    k1: float = 0.9
    b: float = 0.4
    depth: int = 100
    threads: int = 2


MINING_SOURCES = ("bm25", "dense", "teacher")  # dense: the untrained student (stage `baseline`); teacher: its top-K


@dataclass(frozen=True)
class MiningConfig:
    depth: int = 30
    num_negatives: int = 7
    sources: list[str] = field(default_factory=lambda: ["bm25"])  # bm25 | dense (the untrained student)
    fn_margin: float | None = 0.0
    fn_threshold: float | None = None
    pseudo_queries: int = 0  # spans cropped from passages, labelled by the teacher over the corpus (0 = off)
    pseudo_min_words: int = 6
    pseudo_max_words: int = 20


@dataclass(frozen=True)
class LossConfig:
    margin_mse: float = 0.6
    listwise_kl: float = 0.2
    in_batch: float = 0.2
    kl_temperature: float = 0.05
    in_batch_temperature: float = 0.05
    sim_kl: float = 0.0  # the teacher's in-batch similarity matrix (each query vs every batch passage), KL
    sim_mse: float = 0.0  # the same matrix, MSE on raw cosines
    sim_temperature: float = 0.05
    embed: float = 0.0  # student embedding -> learned linear map -> the teacher's embedding, 1 - cosine


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 128
    val_depth: int = 30
    dtype: str = "float32"  # auto | bfloat16 (mixed precision) | float32
    seed: int | None = None  # training's own seed (init order, shuffling); null = the top-level `seed`

    def seed_or(self, default: int) -> int:
        return default if self.seed is None else self.seed


@dataclass(frozen=True)
class IndexConfig:
    type: str = "hnsw"  # hnsw | ivfpq | flat
    M: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    # ivfpq only (conf/index/ivfpq.yaml): coarse centroids, PQ sub-vectors and bits per code, lists probed
    nlist: int = 128
    m: int = 48
    nbits: int = 8
    nprobe: int = 16
    train_size: int = 100_000  # vectors sampled (seeded) to train the centroids and codebooks
    add_batch: int = 65_536  # vectors added per call, so a big corpus is filled in bounded memory


COMPUTE_BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ComputeConfig:
    """Where bulk model passes run (`kd.compute`): in this process, or on Ray Data actors."""

    backend: str = "local"  # local (no Ray imported) | ray
    address: str = "local"  # ray only: `local` starts Ray here; `auto`, `host:6379` or `ray://host:10001` joins a cluster
    actors: int = 2  # ray only: actor-pool size (each loads the model once)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 512  # texts per shard: the unit sent to an actor and kept on disk for resume
    num_cpus: int | None = None  # ray with address=local: CPUs the local Ray may use (null = all)
    max_retries: int = 3  # ray only: restarts of a dead actor / retries of its shard before a clear error


@dataclass(frozen=True)
class EvalConfig:
    depth: int = 100
    rerank_depth: int = 20
    backends: list[str] = field(default_factory=lambda: ["torch", "onnx", "onnx-int8"])


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    rerank: bool = True
    max_query_chars: int = 1000
    max_k: int = 100
    max_rerank_depth: int = 100
    max_batch: int = 64
    max_body_bytes: int = 65536
    threads: int | None = 1  # student/FAISS threads for serving (null = all cores)
    max_rerank_pairs: int = 6400  # queries x candidates per rerank request (teacher passage embeddings)
    max_scored_pairs: int = 200  # pairs the teacher must score itself (cross-encoder / no passage embeddings)
    max_concurrent_reranks: int = 1  # more at once -> 503 + Retry-After (reranks never queue)
    search_workers: int = 4  # threads for plain searches, apart from reranks
    retry_after_s: int = 1
    max_encode_texts: int = 64
    max_encode_chars: int = 2000
    auth: str = "none"  # none | api_key
    api_keys_file: str = "secrets/api_keys.json"  # argon2 hashes only (python -m service.keys)
    rate_limit_per_minute: int = 0  # per API key (per client address with auth none); 0 = off
    rate_limit_burst: int = 0  # bucket size; 0 = a tenth of a minute's allowance (at least 1)
    student_model: str | None = None  # null: the DVC folder artifacts/student; or models:/<name>@<alias>
    teacher_corpus_dir: str = "artifacts/teacher_corpus"


@dataclass(frozen=True)
class Params:
    seed: int = 13
    data: DataConfig = field(default_factory=DataConfig)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name="mpnet", model="mpnet"))
    student: ModelConfig = field(default_factory=ModelConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    mining: MiningConfig = field(default_factory=MiningConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, the shape MLflow wants for params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    walk(f"{prefix}{f.name}.", getattr(value, f.name))
            else:
                out[prefix.rstrip(".")] = value

        walk("", self)
        return out


T = TypeVar("T")


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (
        not isinstance(value, tp) or (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(
            f"params key '{key}' must be {tp.__name__}, got {value!r}. "
            f"Fix it in conf/ (or with `dvc exp run -S {key}=...`)."
        )
    return value


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"params section '{prefix or 'root'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(
            f"unknown params key(s): {keys}. Known keys in '{prefix.rstrip('.') or 'root'}': "
            f"{', '.join(sorted(names))}. Check the spelling in conf/ or your -S override."
        )
    kwargs: dict[str, Any] = {}
    for name in names & set(raw):
        tp = hints[name]
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            if isinstance(value, str) and value == "???":
                raise ConfigError(
                    f"params key '{prefix}{name}' is required but unset. "
                    f"Set it with `dvc exp run -S {prefix}{name}=...`."
                )
            kwargs[name] = _check_type(value, tp, f"{prefix}{name}")
    return cls(**kwargs)


def params_from_dict(raw: dict[str, Any]) -> Params:
    params = _build(Params, raw, "")

    check_backend(params.student.backend)  # ConfigError naming student.backend
    check_backend(params.student.corpus_backend, "student.corpus_backend")
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
    if params.teacher.score_norm not in ("none", "standardize"):
        raise ConfigError(
            f"teacher.score_norm={params.teacher.score_norm!r} is unknown: use none or standardize (conf/teacher/)"
        )
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


def load_params(path: Path | str = PARAMS_FILE) -> Params:
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
