"""Student training: sentence-transformers' trainer with the distillation loss.

`DistillLoss.forward` only encodes; the maths is `kd.distill.losses.combined`. nDCG@10 on the dev queries
each epoch comes from sentence-transformers' InformationRetrievalEvaluator over a pool that mimics
the full corpus (judged + the top candidates of BM25 and of the untrained student); the best
epoch's weights are kept. Test queries are never seen here.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd.atomic import write_text
from kd.config import ComputeConfig, LossConfig, TrainConfig
from kd.distill.curves import Curves
from kd.distill.dev import VAL_METRIC
from kd.distill.mixing import check_mixes
from kd.distill.objective import DistillLoss
from kd.errors import ConfigError
from kd.models.loading import set_max_length


@functools.cache
def seeded_trainer() -> type:
    """sentence-transformers' trainer whose batch order follows the training seed.

    Its trainer builds a plain dataset's batch sampler with the default seed 0, so every `train.seed`
    saw the same batches and only dropout differed (a model without dropout, such as a static table,
    trained identically). This one seeds the sampler with `data_seed` (else `seed`).
    """
    from sentence_transformers import SentenceTransformerTrainer

    class SeededTrainer(SentenceTransformerTrainer):  # type: ignore[misc]
        """The trainer, its batch sampler seeded with the training arguments' `data_seed` (else `seed`)."""

        def get_batch_sampler(self, *args: Any, **kwargs: Any) -> Any:
            """The parent's batch sampler, seeded with `data_seed` (else `seed`) instead of 0."""
            kwargs["seed"] = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return super().get_batch_sampler(*args, **kwargs)

    return SeededTrainer


def train(
    model: Any,
    rows: dict[str, list[Any]],
    evaluator: Any,
    loss_cfg: LossConfig,
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    on_metrics: Callable[[str, float, int], None] | None = None,
    bf16: bool = False,
    projection: nn.Linear | None = None,
    compute: ComputeConfig | None = None,
    teacher_passages: int | None = None,
) -> Curves:
    """Fit `model` in place; return curves. Keeps the best epoch by dev nDCG@10 (pool).

    `bf16`: mixed precision (autocast to bfloat16; weights and optimizer stay float32), for CPUs with
    native bf16 (`kd.models.runtime.use_bf16`); on a 2-core AMD EPYC with avx512_bf16 it was barely faster and scored lower.
    `projection`: the student->teacher map that `loss.embed` trains alongside (see `fit_projection`).
    `cfg.workers` > 1: data-parallel on Ray Train (`train_on_ray`), on the cluster `compute` names.
    `teacher_passages`: group size, when the rows carry the teacher's passage embeddings instead of
    passage texts (asymmetric training, see `DistillLoss`).
    """
    if cfg.workers < 1:
        raise ConfigError(f"train.workers={cfg.workers} must be >= 1 (1 = one process; N = N data-parallel workers on Ray)")
    check_mixes(cfg.interpolate, cfg.interpolate_grid)  # before training, not after it
    job = FitJob(model, rows, evaluator, loss_cfg, cfg, seed, bf16, projection, teacher_passages)
    if cfg.workers > 1:
        return train_on_ray(job, cfg.workers, work_dir, on_metrics, compute or ComputeConfig())
    return job(work_dir, on_metrics)


@dataclass
class FitJob:
    """What one training process needs (`train`'s arguments), whole, so a Ray worker gets the same job."""

    model: Any
    rows: dict[str, list[Any]]
    evaluator: Any
    loss_cfg: LossConfig
    cfg: TrainConfig
    seed: int
    bf16: bool = False
    projection: nn.Linear | None = None
    teacher_passages: int | None = None

    def __call__(
        self, work_dir: Path, on_metrics: Callable[[str, float, int], None] | None, use_cpu: bool = True
    ) -> Curves:
        return _fit(self, work_dir, on_metrics, use_cpu)


def _fit(job: FitJob, work_dir: Path, on_metrics: Callable[[str, float, int], None] | None, use_cpu: bool) -> Curves:
    """One process's training; under Ray Train every worker runs it and the HF trainer does the DDP."""
    model, rows, evaluator, loss_cfg, cfg, seed = job.model, job.rows, job.evaluator, job.loss_cfg, job.cfg, job.seed
    bf16, projection, teacher_passages = job.bf16, job.projection, job.teacher_passages
    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback, set_seed

    set_seed(seed)
    set_max_length(model, cfg.max_seq_length)
    loss = DistillLoss(model, loss_cfg, projection, teacher_passages)
    curves = Curves()
    n = len(rows["query"])
    steps_per_epoch = math.ceil(n / (cfg.batch_size * cfg.workers))  # DDP: each step takes a batch per worker
    log_every = max(1, steps_per_epoch // 10)
    base = evaluator(model)
    curves.epochs.append({"epoch": 0, "dev_ndcg@10": base[VAL_METRIC]})
    if on_metrics:
        on_metrics("dev_pool_ndcg_at_10", base[VAL_METRIC], 0)

    class Recorder(TrainerCallback):  # type: ignore[misc]
        """Copies the loss components and the dev nDCG@10 into `curves` (and `on_metrics`) as the trainer logs."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            """At a loss log: append the mean loss components since the last log and the learning rate as a step row."""
            parts = loss.drain()
            if parts and logs and "loss" in logs:
                row = {"step": state.global_step, "epoch": round(state.epoch or 0, 3), **parts,
                       "learning_rate": logs.get("learning_rate", 0.0)}  # fmt: skip
                curves.steps.append(row)
                if on_metrics:
                    for k, v in parts.items():
                        on_metrics(f"loss_{k}", v, state.global_step)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
            """After an evaluation: append the epoch's dev-pool nDCG@10, when the metrics hold it."""
            value = (metrics or {}).get(f"eval_{VAL_METRIC}")
            if value is not None:
                epoch = round(state.epoch or 0)
                curves.epochs.append({"epoch": epoch, "dev_ndcg@10": value})
                if on_metrics:
                    on_metrics("dev_pool_ndcg_at_10", value, epoch)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # in-batch negatives must not be someone's positive
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{VAL_METRIC}",
        greater_is_better=True,
        logging_steps=log_every,
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        bf16=bf16,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        save_only_model=True,
    )
    trainer = seeded_trainer()(
        model=model,
        args=args,
        train_dataset=HFDataset.from_dict(rows),
        loss=loss,
        evaluator=evaluator,
        callbacks=[Recorder()],
    )
    trainer.train()
    return curves


def train_on_ray(
    job: FitJob,
    workers: int,
    work_dir: Path,
    on_metrics: Callable[[str, float, int], None] | None,
    compute: ComputeConfig,
) -> Curves:
    """`workers` DDP workers on Ray Train's TorchTrainer, each running `job`.

    Ray starts the workers and the process group (gloo on CPU, NCCL when `compute.gpus_per_actor` > 0);
    the HF trainer inside each worker shards the batches and averages gradients; the in-batch term sees
    every rank's passages (`gathered_passages`). Rank 0 saves the kept epoch's weights and the curves
    under `work_dir` (one machine, or storage every node shares); they are loaded back into the model
    here, and the curves replayed to `on_metrics`. A failed worker restarts the run up to
    `compute.max_retries` times (from scratch: training is minutes, not hours, at this scale).
    """
    from kd.compute import ComputeError, init_ray, root_message

    ray = init_ray(compute)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = compute.gpus_per_actor > 0
    have = ray.cluster_resources()
    model, projection = job.model, job.projection
    need = {"CPU": workers * compute.cpus_per_actor, "GPU": workers * compute.gpus_per_actor}
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0)}
    if short:
        raise ComputeError(
            f"train.workers={workers} x (compute.cpus_per_actor={compute.cpus_per_actor}, "
            f"compute.gpus_per_actor={compute.gpus_per_actor}) needs {short}, the cluster has "
            f"{ {k: have.get(k, 0.0) for k in short} }: lower train.workers or the per-actor resources"
        )
    out = work_dir.resolve() / "ddp"

    def loop(_: dict[str, Any]) -> None:  # runs in every worker, on a copy of the closure
        """One worker's training; rank 0 then saves the model, the curves and the projection under `out`."""
        import ray.train

        curves = job(out / "trainer", None, use_cpu=not use_gpu)
        if ray.train.get_context().get_world_rank() == 0:
            job.model.save(str(out / "model"), create_model_card=False)  # this worker's copy, now trained
            write_text(out / "curves.json", json.dumps({"steps": curves.steps, "epochs": curves.epochs}))
            if job.projection is not None:
                torch.save(job.projection.state_dict(), out / "projection.pt")

    resources = {"CPU": compute.cpus_per_actor, **({"GPU": compute.gpus_per_actor} if use_gpu else {})}
    trainer = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name="train", storage_path=str(work_dir.resolve() / "ray"),
                             failure_config=FailureConfig(max_failures=compute.max_retries)),  # fmt: skip
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error; name the keys instead
        raise ComputeError(
            f"data-parallel training failed ({root_message(exc)}): set train.workers=1 to train in one process, "
            f"or check compute.address / compute.max_retries"
        ) from exc
    trained = type(model)(str(out / "model"), device=str(model.device))
    model.load_state_dict(trained.state_dict())
    if projection is not None:
        projection.load_state_dict(torch.load(out / "projection.pt"))
    raw = json.loads((out / "curves.json").read_text())
    curves = Curves(steps=raw["steps"], epochs=raw["epochs"])
    if on_metrics:
        for row in curves.steps:
            for k, v in row.items():
                if k not in ("step", "epoch", "learning_rate"):
                    on_metrics(f"loss_{k}", v, int(row["step"]))
        for row in curves.epochs:
            on_metrics("dev_pool_ndcg_at_10", row["dev_ndcg@10"], int(row["epoch"]))
    return curves


