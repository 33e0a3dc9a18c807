"""Where bulk model passes run: in this process (`compute=local`) or on a Ray Data actor pool (`compute=ray`).

One small interface for the stages:

    encode_texts(texts, spec, compute_cfg, chunk_dir) -> float32 [N, D]   (a bi-encoder's normalised embeddings)
    score_pairs(queries, passages, spec, compute_cfg, chunk_dir) -> float32 [N]   (a teacher's pair scores)

Both sort the inputs by length (so each batch pads little), cut them into shards of `compute.batch_size`,
and keep every finished shard as `<chunk_dir>/part-<i>.npy`, written atomically: a killed run resumes
from its finished shards and never takes a half-written one as complete. The local and the Ray path cut
and write the same shards, so either resumes the other's run and their results agree to float tolerance.

With Ray, each shard is one row of a Ray Data dataset mapped by `map_batches` over a callable class
that loads the model once per actor (`compute.actors` actors of `cpus_per_actor`/`gpus_per_actor`);
the driver writes each shard as soon as it streams back, so only the driver needs the chunk folder.
Ray is imported only on that path (`pip install -e ".[ray]"`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd.atomic import atomic_path, write_text
from kd.config import COMPUTE_BACKENDS, ComputeConfig, ModelConfig
from kd.errors import ArtifactError, ConfigError, KDError
from kd.models.backends import load_student
from kd.models.loading import encode, initial_student
from kd.models.runtime import corpus_backend_for, use_bf16
from kd.models.store import model_fingerprint, resolve
from kd.models.teacher import BiEncoderTeacher, load_teacher

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


# --- the worker: loads the model once, runs one shard per call ------------------------------------------


class ShardRunner:
    """Loads the model once (per process or per Ray actor); `run` turns one shard's inputs into an array."""

    def __init__(self, spec: ModelSpec, op: str, threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(max(1, threads))
        self.spec, self.op = spec, op
        self._encode: Callable[[list[str]], np.ndarray] | None = None
        self._score: Callable[[list[str], list[str]], np.ndarray] | None = None
        self._load()

    def _load(self) -> None:
        spec, cfg = self.spec, self.spec.cfg
        prefix = cfg.query_prefix if spec.text == "query" else cfg.passage_prefix
        backend = spec.corpus_backend()
        onnx_pass = spec.role == "teacher" and backend != "torch" and spec.text == "passage" and self.op == "encode"
        if spec.role == "student" or onnx_pass:  # a bi-encoder teacher's corpus pass runs like a student's
            model = load_student(spec.model_dir or cfg.model, backend, cfg.max_seq_length)
            self._encode = lambda texts: encode(model, texts, prefix, cfg.batch_size, dtype=cfg.dtype)
            return
        teacher = load_teacher(cfg)
        self._score = teacher.score
        if isinstance(teacher, BiEncoderTeacher):
            self._encode = teacher.encode_queries if spec.text == "query" else teacher.encode_passages

    def run(self, payload: list[Any]) -> np.ndarray:
        """One shard's result.

        Args:
            payload: texts to encode (op `encode`), or `[query, passage]` pairs to score (op `score`).

        Returns:
            float32 `[len(payload), dim]` embeddings, or `[len(payload), 1]` pair scores.
        """
        if self.op == "encode":
            if self._encode is None:
                raise ConfigError(
                    f"teacher.kind={self.spec.cfg.kind!r} has no embeddings to encode: score pairs instead"
                )
            return np.asarray(self._encode(payload), dtype=np.float32)
        assert self._score is not None, "pair scoring needs a teacher (ModelSpec.teacher)"
        qs, ps = [q for q, _ in payload], [p for _, p in payload]
        return np.asarray(self._score(qs, ps), dtype=np.float32).reshape(-1, 1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data entry point: each row is one shard (index + JSON payload); the array goes back as bytes."""
        out: dict[str, list[Any]] = {"shard": [], "rows": [], "cols": [], "data": []}
        for shard, payload in zip(batch["shard"], batch["payload"]):
            arr = np.ascontiguousarray(self.run(json.loads(str(payload))), dtype=np.float32)
            out["shard"].append(int(shard))
            out["rows"].append(arr.shape[0])
            out["cols"].append(arr.shape[1])
            out["data"].append(arr.tobytes())
        return {
            "shard": np.asarray(out["shard"], dtype=np.int64),
            "rows": np.asarray(out["rows"], dtype=np.int64),
            "cols": np.asarray(out["cols"], dtype=np.int64),
            "data": np.asarray(out["data"], dtype=object),
        }


# --- shards on disk ------------------------------------------------------------------------------------------


def _shard_path(chunk_dir: Path, i: int) -> Path:
    return chunk_dir / f"part-{i:05d}.npy"


def _prepare(chunk_dir: Path, inputs: dict[str, Any]) -> None:
    """Keep shards only if they were cut from these inputs; a changed input or shard size drops them."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    marker = chunk_dir / "inputs.json"
    if not marker.exists() and any(chunk_dir.glob("part-*.npy")):
        raise ArtifactError(
            f"{chunk_dir} holds part-*.npy files that kd.compute did not write (no inputs.json): "
            "pass a folder of its own as chunk_dir"
        )
    try:
        same = json.loads(marker.read_text()) == inputs
    except (OSError, ValueError):
        same = False
    if not same:
        for f in chunk_dir.glob("part-*.npy"):
            f.unlink()
        write_text(marker, json.dumps(inputs, sort_keys=True))


def _save(path: Path, arr: np.ndarray, dtype: Any) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.save(fh, np.asarray(arr, dtype=dtype))


def _load_shard(path: Path, rows: int) -> np.ndarray | None:
    """A finished shard, or None if it is unreadable or of the wrong length (then it is recomputed)."""
    try:
        arr = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == rows else None


def _digest(items: list[Any]) -> str:
    digest = hashlib.sha256()
    for x in items:
        digest.update(json.dumps(x, ensure_ascii=False).encode() + b"\x1e")
    return digest.hexdigest()[:16]


def _sharded(
    items: list[Any],
    lengths: list[int],
    spec: ModelSpec,
    op: str,
    cfg: ComputeConfig,
    chunk_dir: Path | None,
    store_dtype: Any,
    runner_cls: type[ShardRunner] = ShardRunner,
) -> np.ndarray:
    """Run `op` over `items` in shards (length-sorted), resuming from `chunk_dir`; rows in input order."""
    check(cfg)
    order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
    size = cfg.batch_size
    shards = [[items[i] for i in order[s : s + size]] for s in range(0, len(order), size)]
    results: dict[int, np.ndarray] = {}
    if chunk_dir is not None:
        inputs = {"count": len(items), "shard_size": size, "op": op, "model": spec.key(), "inputs": _digest(items),
                  "dtype": np.dtype(store_dtype).name}  # fmt: skip
        _prepare(chunk_dir, inputs)
        for i, shard in enumerate(shards):
            path = _shard_path(chunk_dir, i)
            if path.exists() and (arr := _load_shard(path, len(shard))) is not None:
                results[i] = arr
        if results:
            log.info("resuming: %d of %d shards already done in %s", len(results), len(shards), chunk_dir)
    todo = {i: s for i, s in enumerate(shards) if i not in results}

    def keep(i: int, arr: np.ndarray) -> None:
        if chunk_dir is not None:
            _save(_shard_path(chunk_dir, i), arr, store_dtype)
        results[i] = np.asarray(arr, dtype=store_dtype)

    started = time.perf_counter()
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(shards), initial=len(results), desc=f"{op} ({cfg.backend})", unit="shard", mininterval=5)
        if cfg.backend == "local":
            stream = _run_local(todo, spec, op, runner_cls)
        else:
            stream = _run_ray(todo, spec, op, cfg, chunk_dir, len(shards), runner_cls)
        for i, arr in stream:
            keep(i, arr)
            bar.update(1)
        bar.close()
    computed = sum(len(todo[i]) for i in todo)
    log.info(pass_record(op, spec, len(items), computed, time.perf_counter() - started))
    if not shards:
        return np.zeros((0, 0 if op == "encode" else 1), dtype=np.float32)
    sorted_out = np.concatenate([results[i] for i in range(len(shards))]).astype(np.float32)
    out = np.empty_like(sorted_out)
    out[order] = sorted_out
    return out


PASS_PREFIX = "pass:"  # bench.stage_times reads these lines from each stage's log


def kernel_path(spec: ModelSpec) -> str:
    """The arithmetic a pass of `spec` runs on this CPU: `torch/bfloat16`, `torch/float32`, `onnx/float32` or `onnx/int8`."""
    backend = spec.corpus_backend() if spec.text == "passage" or spec.role == "student" else "torch"
    if backend == "torch":
        return f"torch/{'bfloat16' if use_bf16(spec.cfg.dtype) else 'float32'}"
    return "onnx/int8" if backend == "onnx-int8" else "onnx/float32"


def pass_record(op: str, spec: ModelSpec, items: int, computed: int, seconds: float) -> str:
    """One log line per pass: what ran, how much came from the kept shards, the rate and the kernel path.

    Example: `pass: encode role=teacher model=mpnet items=9342 computed=9342 seconds=1870.2
    per_s=5.0 kernel=torch/float32`.
    """
    rate = computed / seconds if computed and seconds > 0 else 0.0
    return (f"{PASS_PREFIX} {op} role={spec.role} model={spec.cfg.model} items={items} computed={computed} "
            f"seconds={seconds:.1f} per_s={rate:.1f} kernel={kernel_path(spec)}")  # fmt: skip


def _run_local(
    todo: dict[int, list[Any]], spec: ModelSpec, op: str, runner_cls: type[ShardRunner]
) -> Iterator[tuple[int, np.ndarray]]:
    runner = runner_cls(spec, op)
    for i, payload in todo.items():
        yield i, runner.run(payload)


# --- Ray -------------------------------------------------------------------------------------------------


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to `host:port` first, so a wrong address fails in seconds with the key to fix."""
    if address in ("auto", "local", ""):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ComputeError(
            f"compute.address={address!r} is not `local`, `auto`, `host:port` or `ray://host:port`: fix compute.address"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ComputeError(f"compute.address={address!r} is unreachable ({exc}): {ADDRESS_FIX}") from exc


def init_ray(cfg: ComputeConfig) -> Any:
    """Connect to (or start) Ray once per process; reuse a session already started (tests share one)."""
    try:
        import ray
    except ImportError as exc:
        raise ComputeError('compute.backend=ray needs Ray: `pip install -e ".[ray]"` (or use compute=local)') from exc
    if cfg.address != "local":
        _check_reachable(cfg.address)
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if cfg.address == "local":
        ray.init(num_cpus=cfg.num_cpus, **kwargs)
    else:
        try:
            ray.init(address=cfg.address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: one fix
            raise ComputeError(
                f"could not join the Ray cluster at compute.address={cfg.address!r} "
                f"({type(exc).__name__}: {str(exc)[:200]}): {ADDRESS_FIX}"
            ) from exc
    return ray


def plan_actors(cfg: ComputeConfig, resources: dict[str, float]) -> int:
    """How many actors the cluster can hold; a GPU or CPU request it cannot meet at all is an error."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    where = f"the Ray cluster at compute.address={cfg.address!r}"
    if cfg.gpus_per_actor > 0 and gpus < cfg.gpus_per_actor:
        raise ComputeError(
            f"compute.gpus_per_actor={cfg.gpus_per_actor} but {where} has {gpus:g} GPUs: set "
            "compute.gpus_per_actor=0 to run on CPUs, or add GPU nodes to the cluster"
        )
    if cpus < cfg.cpus_per_actor:
        raise ComputeError(
            f"compute.cpus_per_actor={cfg.cpus_per_actor} but {where} has {cpus:g} CPUs: lower "
            "compute.cpus_per_actor (or raise compute.num_cpus for a local Ray)"
        )
    fit = math.floor(cpus / cfg.cpus_per_actor + 1e-9)
    if cfg.gpus_per_actor > 0:
        fit = min(fit, math.floor(gpus / cfg.gpus_per_actor + 1e-9))
    if fit < cfg.actors:
        log.warning("compute.actors=%d but %s fits %d: running %d actors", cfg.actors, where, fit, fit)
    return max(1, min(cfg.actors, fit))


def _map(ray: Any, rows: list[dict[str, Any]], runner_cls: type[ShardRunner], spec: ModelSpec, op: str,
         cfg: ComputeConfig, actors: int) -> Any:  # fmt: skip
    """One row per shard, one block per row (so shards spread over the actors), one shard per call."""
    return ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        runner_cls,
        fn_constructor_kwargs={"spec": spec, "op": op, "threads": max(1, int(cfg.cpus_per_actor))},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=1,
        batch_format="numpy",
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor,
        max_restarts=cfg.max_retries,  # Ray Data's default is -1 (forever): a worker that always dies would hang
        max_task_retries=cfg.max_retries,
    )


def _run_ray(
    todo: dict[int, list[Any]],
    spec: ModelSpec,
    op: str,
    cfg: ComputeConfig,
    chunk_dir: Path | None,
    total: int,
    runner_cls: type[ShardRunner],
) -> Iterator[tuple[int, np.ndarray]]:
    init_ray(cfg)
    import ray
    import ray.data

    actors = min(plan_actors(cfg, ray.cluster_resources()), len(todo))  # no idle actors for a few shards
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    rows = [{"shard": i, "payload": json.dumps(p, ensure_ascii=False)} for i, p in todo.items()]
    with warnings.catch_warnings():  # max_restarts/max_task_retries still pass through **ray_remote_args (< 2.64)
        warnings.simplefilter("ignore")
        ds = _map(ray, rows, runner_cls, spec, op, cfg, actors)
    done = total - len(todo)
    started = time.perf_counter()
    try:
        for row in ds.iter_rows():
            arr = np.frombuffer(row["data"], dtype=np.float32).reshape(int(row["rows"]), int(row["cols"]))
            yield int(row["shard"]), arr
            done += 1
    except Exception as exc:  # noqa: BLE001 - actor death, a user error inside it: same report, shards kept
        kept = f"{done} of {total} shards are kept in {chunk_dir}: re-run to resume from them" if chunk_dir else (
            f"{done} of {total} shards finished (no chunk_dir: nothing kept)"
        )  # fmt: skip
        raise ComputeError(
            f"a Ray worker failed after {time.perf_counter() - started:.0f}s and compute.max_retries="
            f"{cfg.max_retries} retries ({type(exc).__name__}: {root_message(exc)}). {kept}; raise "
            "compute.max_retries for flaky nodes, or run with compute=local to see the error in-process"
        ) from exc


def root_message(exc: BaseException) -> str:
    """The innermost cause's message (Ray wraps a worker's error several times), trimmed."""
    seen = exc
    while seen.__cause__ is not None and seen.__cause__ is not seen:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return (text[-1] if text else type(seen).__name__)[:300]


# --- the interface -------------------------------------------------------------------------------------------


def encode_texts(
    texts: list[str],
    spec: ModelSpec,
    cfg: ComputeConfig,
    chunk_dir: Path | None = None,
    store_dtype: Any = np.float32,
) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (row i is texts[i]), computed where `cfg` says.

    `chunk_dir`: where finished shards are kept (resume after a kill); None keeps nothing.
    `store_dtype`: the shards' on-disk dtype (float16 halves a teacher corpus pass's cache).
    """
    return _sharded(list(texts), [len(t) for t in texts], spec, "encode", cfg, chunk_dir, store_dtype)


def score_pairs(
    queries: list[str],
    passages: list[str],
    spec: ModelSpec,
    cfg: ComputeConfig,
    chunk_dir: Path | None = None,
) -> np.ndarray:
    """The teacher's score for each (queries[i], passages[i]) (cross-encoder logits or bi-encoder cosine)."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passages: pairs must line up")
    pairs = [[q, p] for q, p in zip(queries, passages)]
    lengths = [len(q) + len(p) for q, p in zip(queries, passages)]
    return _sharded(pairs, lengths, spec, "score", cfg, chunk_dir, np.float32).reshape(-1)


@dataclass(frozen=True)
class PairScorer:
    """A teacher's `score(queries, passages)` run through `score_pairs`: what stage `teacher` hands
    `kd.distill.teacher_scores.score_groups` for a cross-encoder under `compute=ray`, one Ray pass per chunk of
    `teacher.chunk_groups` groups (raise it on a cluster, so actor start-up and model load amortise)."""

    spec: ModelSpec
    cfg: ComputeConfig

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        """The teacher's score of each (query, passage) pair, `[len(queries)]` float32; as `Teacher.score`."""
        return score_pairs(queries, passages, self.spec, self.cfg)


def fingerprint(texts: list[str], spec: ModelSpec, extra: str = "") -> str:
    """A stable name for a chunk folder: the texts (in order), the model and anything else the caller adds."""
    return hashlib.sha256(f"{_digest(list(texts))}\x1f{spec.key()}\x1f{extra}".encode()).hexdigest()[:16]
