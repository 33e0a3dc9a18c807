"""Typed views of `params.yaml`: the one place that knows the keys, their vocabularies and defaults.

The dataclasses are the schema (OmegaConf structured configs) and the one set of defaults:
`Params()` equals the composition of `conf/` (tests/test_config.py). `kd.params.load_params` reads
`params.yaml` onto this schema and checks it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from kd import artifacts

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
    dtype: str = "float32"  # PyTorch inference (encoding): auto (bf16 where the CPU has it natively and it measures faster) | bfloat16 | float32
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
