"""Typed views of `params.yaml`: the one place that knows the keys.

Stages read `params.yaml` (written by DVC's Hydra integration from `conf/`) through `load_params`,
so a misspelt or missing key fails here with the key's name and the fix, not deep inside a stage.
The dataclasses are the schema (OmegaConf structured configs) and the one set of defaults:
`Params()` equals the composition of `conf/` (tests/test_config.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from kd import artifacts
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

PARAMS_FILE = Path("params.yaml")
DEFAULT_SEED = 13  # `seed`: the one default every seeded step falls back to


@dataclass(frozen=True)
class DataConfig:
    """What every data source has: its name, the split caps and how held-out queries split."""

    name: str = "python_docs_faq"
    max_passages: int | None = None  # cap the corpus (smoke runs); judged passages are always kept
    max_train_queries: int | None = 600
    max_dev_queries: int | None = None
    max_test_queries: int | None = None
    dev_fraction: float = 0.33  # held-out queries -> dev by a stable id hash (where the source has no dev split)


@dataclass(frozen=True)
class PythonDocsFaqData(DataConfig):
    """The CPython docs: FAQ questions are held out (dev/test), headings and API names train."""

    debian_package: str | None = "python3.11-doc"
    doc_dir: str | None = None  # or a local CPython Doc/ (or html/_sources) folder: no apt needed
    min_words: int = 100
    max_words: int = 150
    exclude: list[str] = field(default_factory=lambda: ["whatsnew/"])


@dataclass(frozen=True)
class BeirDirData(DataConfig):
    """Any local BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv)."""

    name: str = "beir_dir"
    path: str = MISSING  # required: -S data.path=/abs/path/to/folder


@dataclass(frozen=True)
class MsMarcoData(DataConfig):
    """MS MARCO passage via ir_datasets: judged queries and their passages, padded to max_passages."""

    name: str = "msmarco"
    max_passages: int | None = 10_000
    max_train_queries: int | None = 400
    max_dev_queries: int | None = 60
    max_test_queries: int | None = 200


DATA_SOURCES: dict[str, type[DataConfig]] = {
    "python_docs_faq": PythonDocsFaqData,
    "beir_dir": BeirDirData,
    "msmarco": MsMarcoData,
}


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
    corpus_backend: str = "torch"  # bulk corpus passes (student: baseline, index; teacher: teacher_corpus): auto | torch | onnx | onnx-int8
    dtype: str = "float32"  # PyTorch inference (encoding): auto (bf16 where the CPU has it natively) | bfloat16 | float32
    score_norm: str = "none"  # teacher only: none | standardize (each group's scores to mean 0, std score_scale)
    score_scale: float = 0.1  # teacher only: the per-group std of standardised scores (a student's cosine spread)
    smoke_model: str = "minilm"  # teacher only: the tiny stand-in of this kind that `+experiment=smoke` uses
    layers: list[int] | None = None  # student only: transformer layers kept, in order (a cut checkpoint); null keeps all
    dim: int | None = None  # student kind=static only: the table's dimension (PCA of the source's); null keeps it
    learning_rate: float | None = None  # student only: overrides train.learning_rate (a static table needs a far larger one)


@dataclass(frozen=True)
class BM25Config:
    """BM25 retrieval: term saturation `k1`, length normalisation `b`, hits per query `depth`, threads."""

    k1: float = 0.9
    b: float = 0.4
    depth: int = 100
    threads: int = 2


MINING_SOURCES = ("bm25", "dense", "teacher")  # dense: the untrained student (stage `baseline`); teacher: its top-K


@dataclass(frozen=True)
class MiningConfig:
    """Hard-negative mining: candidates per source, negatives per query, false-negative filters, pseudo queries."""

    depth: int = 6
    num_negatives: int = 3
    sources: list[str] = field(default_factory=lambda: ["bm25"])  # bm25 | dense (the untrained student)
    fn_margin: float | None = 0.0
    fn_threshold: float | None = None
    pseudo_queries: int = 0  # spans cropped from passages, labelled by the teacher over the corpus (0 = off)
    pseudo_min_words: int = 6
    pseudo_max_words: int = 20
    question_share: float = 0.0  # share of training queries rewritten as questions by a template (kd.distill.pseudo)


@dataclass(frozen=True)
class LossConfig:
    """Weights and temperatures of the losses summed by `kd.distill.losses.combined` (a weight of 0 drops the term)."""

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
    """Student training: optimiser schedule, sequence length, precision, seed, workers and WiSE-FT interpolation."""

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 128
    val_depth: int = 20
    dtype: str = "float32"  # auto | bfloat16 (mixed precision) | float32
    seed: int | None = None  # training's own seed (init order, shuffling); null = the top-level `seed`
    workers: int = 1  # > 1: data-parallel (DDP) workers on Ray Train, on the cluster of `compute`
    interpolate: float = 0.5  # WiSE-FT: keep interpolate*trained + (1-interpolate)*initial weights (1 = trained)
    interpolate_grid: list[float] = field(default_factory=list)  # also score these mixes on the dev pool (a curve)
    corpus_epochs: int = 0  # epochs over unjudged corpus passages toward the teacher's rows before ranking (kd.distill.corpus_fit)

    def seed_or(self, default: int) -> int:
        """Training's seed: `seed` when set, else `default` (the top-level seed)."""
        return default if self.seed is None else self.seed


@dataclass(frozen=True)
class IndexConfig:
    """The FAISS index: whose passage vectors it holds, its type (hnsw | ivfpq | flat) and that type's parameters."""

    passages: str = "student"  # student: the student encodes the corpus (symmetric); teacher: the teacher's matrix (asymmetric)
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
    actors: int = 1  # ray only: actor-pool size (each loads the model once)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 512  # texts per shard: the unit sent to an actor and kept on disk for resume
    num_cpus: int | None = None  # ray with address=local: CPUs the local Ray may use (null = all)
    max_retries: int = 3  # ray only: restarts of a dead actor / retries of its shard before a clear error


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: retrieval `depth`, teacher `rerank_depth`, and the student query backends compared."""

    depth: int = 100
    rerank_depth: int = 10
    backends: list[str] = field(default_factory=lambda: ["torch", "onnx", "onnx-int8"])


@dataclass(frozen=True)
class ServiceConfig:
    """The search service: address, request limits, threads, rerank admission, auth, rate limits, artifacts."""

    host: str = "127.0.0.1"
    port: int = 8000
    rerank: bool = True
    max_query_chars: int = 1000
    max_k: int = 100
    max_rerank_depth: int = 100
    max_batch: int = 64
    max_body_bytes: int = 65536
    threads: int | None = 1  # student/teacher/FAISS threads for serving (null = all cores)
    max_rerank_pairs: int = 6400  # queries x candidates per rerank request (teacher passage embeddings)
    max_scored_pairs: int = 200  # pairs the teacher must score itself (cross-encoder / no passage embeddings)
    max_concurrent_reranks: int = 1  # more at once -> 503 + Retry-After (reranks never queue)
    search_workers: int = 4  # threads for plain searches, apart from reranks
    rerank_nice: int = 10  # the rerank threads' nice value (Linux): plain searches take the CPU first (0 = equal)
    retry_after_s: int = 1
    max_encode_texts: int = 64
    max_encode_chars: int = 2000
    auth: str = "none"  # none | api_key
    api_keys_file: str = "secrets/api_keys.json"  # argon2 hashes only (python -m service.keys)
    rate_limit_per_minute: int = 0  # per API key (per client address with auth none); 0 = off
    rate_limit_burst: int = 0  # bucket size; 0 = a tenth of a minute's allowance (at least 1)
    student_model: str | None = None  # null: the DVC folder artifacts/student; or models:/<name>@<alias>
    teacher_corpus_dir: str = str(artifacts.TEACHER_CORPUS)  # the teacher matrix the rerank path reads


@dataclass(frozen=True)
class Params:
    """Every section of the pipeline's parameters (params.yaml), typed; see `params_from_dict` and `load_params`."""

    seed: int = DEFAULT_SEED
    data: DataConfig = field(default_factory=PythonDocsFaqData)
    # the roles' defaults are conf/teacher/mpnet.yaml and conf/student/minilm.yaml (tests/test_config.py)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(
        name="mpnet", model="mpnet", max_seq_length=128, batch_size=16, dtype="auto"))
    student: ModelConfig = field(default_factory=lambda: ModelConfig(
        max_seq_length=256, batch_size=64, backend="onnx", dtype="auto"))
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
            """Record `value` under `prefix`, descending into nested dataclasses."""
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    walk(f"{prefix}{f.name}.", getattr(value, f.name))
            else:
                out[prefix.rstrip(".")] = value

        walk("", self)
        return out


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


STUDENT_KINDS: Final[tuple[str, ...]] = ("bi_encoder", "static")
PASSAGE_SOURCES: Final[tuple[str, ...]] = ("student", "teacher")


def check_layers(layers: list[int] | None, key: str = "student.layers") -> None:
    """`layers` (transformer layers to keep) must be null or a non-empty, strictly increasing list of indices >= 0.

    Whether the last index exists in the checkpoint is checked when it loads (`kd.models.loading.cut_layers`).
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
