"""Passes on a Ray cluster: connect (`init_ray`), size the actor pool (`plan_actors`), and map the shards
over `ShardRunner` actors with Ray Data; Ray is imported only here and only on that path."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kd.compute.shards import ShardRunner
from kd.compute.spec import ADDRESS_FIX, ComputeError, ModelSpec
from kd.config import ComputeConfig

log = logging.getLogger(__name__)


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


def run_ray(
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
