"""Student training: sentence-transformers' trainer with the distillation loss.

`DistillLoss.forward` only encodes; the maths is `kd.losses.combined`. nDCG@10 on the dev queries
each epoch comes from sentence-transformers' InformationRetrievalEvaluator over a pool that mimics
the full corpus (judged + the top candidates of BM25 and of the untrained student); the best
epoch's weights are kept. Test queries are never seen here.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kd.atomic import atomic_path, write_text
from kd.config import ComputeConfig, LossConfig, ModelConfig, TrainConfig
from kd.errors import ConfigError, DataError
from kd.losses import combined
from kd.metrics import evaluate as evaluate_run
from kd.models import set_max_length

VAL_METRIC = "dev_cosine_ndcg@10"


class DistillLoss(nn.Module):
    """Encode query + group, hand the normalised embeddings to the pure loss; keep components."""

    def __init__(
        self,
        model: nn.Module,
        weights: LossConfig,
        projection: nn.Linear | None = None,
        teacher_passages: int | None = None,
    ) -> None:
        """`teacher_passages`: the group size when the passages are the teacher's own embeddings (carried in
        the labels, `training_rows(passages_from_teacher=True)`): the student then encodes queries only, as
        it will when serving asymmetrically (`index.passages=teacher`)."""
        super().__init__()
        self.model = model
        self.weights = weights
        self.projection = projection  # trained with the student (the trainer optimises the loss's parameters)
        self.teacher_passages = teacher_passages
        self.components: dict[str, list[float]] = {}

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        """The weighted distillation loss of one batch (`kd.losses.combined`); records each component.

        Args:
            sentence_features: tokenised inputs, the queries first, then one entry per passage column
                (none when `teacher_passages` is set: the teacher's passage embeddings stand in).
            labels: [B, G] teacher scores, or [B, G + (1 + G) * T] with the teacher's query and G passage
                embeddings (width T) flattened after them (`training_rows`).

        Returns:
            The scalar total loss.
        """
        embs = [F.normalize(self.model(f)["sentence_embedding"], dim=-1) for f in sentence_features]
        q = embs[0]
        g = self.teacher_passages or len(embs) - 1
        labels = labels.to(q.dtype)
        t_q = t_p = None
        if labels.shape[1] > g:  # scores, then the teacher's query and passage embeddings (see training_rows)
            t = labels[:, g:].reshape(labels.shape[0], 1 + g, -1)
            t_q, t_p = t[:, 0], t[:, 1:]
        if self.teacher_passages:
            if t_p is None:
                raise ValueError("teacher_passages: the labels carry no teacher embeddings (training_rows)")
            p = t_p
        else:
            p = torch.stack(embs[1:], dim=1)
        batch_p, offset = gathered_passages(p)
        total, parts = combined(q, p, labels[:, :g], self.weights, t_q, t_p, self.projection, batch_p, offset,
                                student_passages=not self.teacher_passages)  # fmt: skip
        for k, v in parts.items():
            self.components.setdefault(k, []).append(v)
        self.components.setdefault("total", []).append(float(total.detach()))
        return total

    def drain(self) -> dict[str, float]:
        """Mean of each component since the last call (one logging window)."""
        out = {k: sum(v) / len(v) for k, v in self.components.items() if v}
        self.components = {}
        return out


def gathered_passages(p: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """Under data-parallel training, every rank's passages for the in-batch term, and this rank's offset.

    The gather keeps gradients for this rank's rows (sentence-transformers' `all_gather_with_grad`,
    as its MultipleNegativesRankingLoss does with `gather_across_devices`), so each worker's queries
    see the whole global batch as negatives, as one process with the global batch would. Outside
    DDP, or when ranks hold batches of different sizes (a short last batch), the term stays local.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None, 0
    from sentence_transformers.util import all_gather, all_gather_with_grad

    sizes = all_gather(torch.tensor([p.shape[0]], device=p.device))
    if bool((sizes != p.shape[0]).any()):
        return None, 0
    pos = all_gather_with_grad(p[:, 0].contiguous())
    neg = all_gather_with_grad(p[:, 1:].reshape(-1, p.shape[-1]).contiguous())
    return torch.cat([pos, neg]), dist.get_rank() * p.shape[0]


def training_rows(
    scores: pd.DataFrame,
    query_text: dict[str, str],
    doc_text: dict[str, str],
    student: ModelConfig,
    teacher_q: dict[str, np.ndarray] | None = None,
    teacher_p: Callable[[list[str]], np.ndarray] | None = None,
    passages_from_teacher: bool = False,
) -> dict[str, list[Any]]:
    """Teacher-scores parquet -> columns the trainer feeds to the loss (query, doc_0.., label).

    `label` holds the group's teacher scores; with `teacher_q` (qid -> the teacher's query embedding)
    and `teacher_p` (docids -> the teacher's passage rows) it also carries those embeddings, flattened
    after the scores, for the similarity-matrix terms. `passages_from_teacher`: no passage text columns
    (asymmetric training: the teacher's rows stand for the passages; `DistillLoss(teacher_passages=G)`).
    """
    if passages_from_teacher and (teacher_q is None or teacher_p is None):
        raise DataError("index.passages=teacher trains against the teacher's embeddings: teacher_q and teacher_p needed")
    if scores.empty:
        raise DataError(
            "artifacts/teacher_scores.parquet has no groups: no training query got candidates. "
            "Check data.max_train_queries and mining.depth, then `dvc repro teacher`."
        )
    size = len(scores["doc_ids"].iloc[0])
    cols: dict[str, list[Any]] = {"query": []}
    cols.update({f"doc_{i}": [] for i in range(0 if passages_from_teacher else size)})
    cols["label"] = []
    for qid, doc_ids, group_scores in zip(scores["qid"], scores["doc_ids"], scores["scores"]):
        ids = [str(d) for d in doc_ids]
        if len(ids) != size:
            raise DataError(f"teacher scores: group of {qid} has {len(ids)} docs, others {size}")
        cols["query"].append(student.query_prefix + query_text[str(qid)])
        for i, d in enumerate(ids if not passages_from_teacher else []):
            cols[f"doc_{i}"].append(student.passage_prefix + doc_text[d])
        label = [float(s) for s in group_scores]
        if teacher_q is not None and teacher_p is not None:
            label += np.concatenate([teacher_q[str(qid)][None, :], teacher_p(ids)]).astype(np.float32).ravel().tolist()
        cols["label"].append(label)
    return cols


def fit_projection(student: np.ndarray, teacher: np.ndarray) -> nn.Linear:
    """The least-squares linear map (with bias) from student to teacher embeddings of the same texts.

    `loss.embed` trains this map with the student; starting from a random one would make the first
    steps pull the student toward noise, and at the student's learning rate it would barely move.
    """
    if len(student) != len(teacher) or len(student) <= student.shape[1]:
        raise DataError(
            f"loss.embed: fitting the {student.shape[1]}->{teacher.shape[1]} projection needs more texts than "
            f"dimensions, got {len(student)}; lower loss.embed to 0 or use more training queries (data.max_train_queries)"
        )
    x = torch.from_numpy(np.hstack([student, np.ones((len(student), 1))]).astype(np.float64))
    w = torch.linalg.lstsq(x, torch.from_numpy(teacher.astype(np.float64))).solution  # [D_s + 1, D_t]
    proj = nn.Linear(student.shape[1], teacher.shape[1])
    with torch.no_grad():
        proj.weight.copy_(w[:-1].T.float())
        proj.bias.copy_(w[-1].float())
    return proj


@dataclass
class Curves:
    """What the trainer saw, for dvc plots and MLflow."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    mixes: list[dict[str, float]] = field(default_factory=list)  # dev score per WiSE-FT mix (`wise_ft`)

    def write(self, out_dir: Path) -> None:
        """Write loss.csv (steps), dev.csv (epochs), interpolate.csv (WiSE-FT mixes) under `out_dir`; skip empty ones."""
        for name, rows in (("loss.csv", self.steps), ("dev.csv", self.epochs), ("interpolate.csv", self.mixes)):
            if not rows:
                continue
            with atomic_path(out_dir / name) as tmp, tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


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
    native bf16 (`kd.runtime.use_bf16`); on a 2-core AMD EPYC with avx512_bf16 it was barely faster and scored lower.
    `projection`: the student->teacher map that `loss.embed` trains alongside (see `fit_projection`).
    `cfg.workers` > 1: data-parallel on Ray Train (`train_on_ray`), on the cluster `compute` names.
    `teacher_passages`: group size, when the rows carry the teacher's passage embeddings instead of
    passage texts (asymmetric training, see `DistillLoss`).
    """
    if cfg.workers < 1:
        raise ConfigError(f"train.workers={cfg.workers} must be >= 1 (1 = one process; N = N data-parallel workers on Ray)")
    check_mixes(cfg.interpolate, cfg.interpolate_grid)  # before training, not after it
    job = partial(_fit, model, rows, evaluator, loss_cfg, cfg, seed, bf16=bf16, projection=projection,
                  teacher_passages=teacher_passages)  # fmt: skip
    if cfg.workers > 1:
        return train_on_ray(job, cfg.workers, work_dir, on_metrics, compute or ComputeConfig())
    return job(work_dir, on_metrics)


def _fit(
    model: Any,
    rows: dict[str, list[Any]],
    evaluator: Any,
    loss_cfg: LossConfig,
    cfg: TrainConfig,
    seed: int,
    work_dir: Path,
    on_metrics: Callable[[str, float, int], None] | None,
    bf16: bool,
    projection: nn.Linear | None,
    use_cpu: bool = True,
    teacher_passages: int | None = None,
) -> Curves:
    """One process's training (`train`'s arguments); under Ray Train every worker runs it and the HF
    trainer does the DDP."""
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
    job: partial[Curves],
    workers: int,
    work_dir: Path,
    on_metrics: Callable[[str, float, int], None] | None,
    compute: ComputeConfig,
) -> Curves:
    """`workers` DDP workers on Ray Train's TorchTrainer, each running `job` (`_fit` bound to `train`'s arguments).

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
    model, projection = job.args[0], job.keywords["projection"]
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
            job.args[0].save(str(out / "model"), create_model_card=False)  # this worker's copy, now trained
            write_text(out / "curves.json", json.dumps({"steps": curves.steps, "epochs": curves.epochs}))
            if job.keywords["projection"] is not None:
                torch.save(job.keywords["projection"].state_dict(), out / "projection.pt")

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


def interpolate_weights(
    trained: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT (Wortsman et al., 2022): `alpha * trained + (1 - alpha) * initial`, tensor by tensor.

    Mixing the fine-tuned weights back toward the pretrained ones keeps much of the fine-tuning gain
    and gives back less of what pretraining knew; the student trains on headings and API names but
    is asked questions, on corpora nobody tuned on. Integer buffers (position ids) come from `trained`.
    """
    if set(trained) != set(initial):
        raise ValueError(f"weights differ in names: {sorted(set(trained) ^ set(initial))[:5]}")
    return {
        k: torch.lerp(initial[k].to(v.dtype), v, alpha) if v.is_floating_point() else v for k, v in trained.items()
    }


def check_mixes(alpha: float, grid: Iterable[float]) -> None:
    """Check that the WiSE-FT mix `alpha` and every mix of `grid` lie in [0, 1].

    Raises:
        ConfigError: naming `train.interpolate` or `train.interpolate_grid`.
    """
    for key, values in (("train.interpolate", [alpha]), ("train.interpolate_grid", list(grid))):
        if any(not 0.0 <= a <= 1.0 for a in values):
            raise ConfigError(f"{key}={values} must lie in [0, 1] (1 = the trained weights, 0 = the untrained ones)")


def wise_ft(
    model: Any,
    initial: dict[str, torch.Tensor],
    evaluator: Any,
    alpha: float,
    grid: Iterable[float] = (),
    known: dict[float, float] | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """Leave `model` at `interpolate_weights(its weights, initial, alpha)`; return that model's dev
    score and the dev curve over `grid`, `alpha` and `known` (mix -> dev score already measured: the
    untrained and the trained model), sorted. Each point not in `known` costs one dev-pool pass."""
    check_mixes(alpha, grid)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curve = []
    for a in sorted(set(grid) | {alpha} | set(known or {})):
        if known and a in known:
            curve.append({"interpolate": a, "dev_ndcg@10": known[a]})
            continue
        model.load_state_dict(interpolate_weights(trained, initial, a))
        curve.append({"interpolate": a, "dev_ndcg@10": float(evaluator(model)[VAL_METRIC])})
    model.load_state_dict(interpolate_weights(trained, initial, alpha))
    return next(r["dev_ndcg@10"] for r in curve if r["interpolate"] == alpha), curve


def dev_evaluator(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    corpus_text: dict[str, str],
    student: ModelConfig,
) -> Any:
    """Dev-pool nDCG@10 of the model as it will be served: at `student.max_seq_length`, whatever length
    it trains at (`train.max_seq_length`), so the kept epoch and the WiSE-FT curve score the shipped model."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    class AtServedLength(InformationRetrievalEvaluator):  # type: ignore[misc]
        """sentence-transformers' IR evaluator at the served `student.max_seq_length` (training length restored after)."""

        def __call__(self, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            trained_at = model.max_seq_length
            set_max_length(model, student.max_seq_length)
            try:
                return dict(super().__call__(model, *args, **kwargs))
            finally:
                set_max_length(model, trained_at)

    relevant = {q: {d for d, r in docs.items() if r > 0} for q, docs in qrels.items() if q in queries}
    return AtServedLength(
        queries={q: queries[q] for q in relevant},
        corpus=corpus_text,
        relevant_docs=relevant,
        name="dev",
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10],
        map_at_k=[10],
        show_progress_bar=False,
        batch_size=student.batch_size,
        query_prompt=student.query_prefix or None,
        corpus_prompt=student.passage_prefix or None,
        score_functions={"cosine": cos_sim},
        main_score_function="cosine",
    )



def teacher_index_evaluator(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    view: Any,
    student: ModelConfig,
) -> Any:
    """Dev nDCG@10 of the student's queries against the teacher's passage matrix over the whole corpus:
    the asymmetric system exactly as `evaluate` and the service run it (`index.passages=teacher`).

    `view`: a `kd.teacher_corpus.TeacherCorpus`; exact inner-product search (the corpus is small enough
    for a matrix product per dev pass). Returns the same key as `dev_evaluator`, so the trainer keeps the
    best epoch and WiSE-FT scores its mixes the same way.
    """
    from sentence_transformers.evaluation import SentenceEvaluator

    qids = sorted(q for q in queries if any(r > 0 for r in qrels.get(q, {}).values()))

    class TeacherIndex(SentenceEvaluator):  # type: ignore[misc]
        """Encodes the dev queries at the served length and scores exact top-10 search of `view` by nDCG@10."""

        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = VAL_METRIC
            self.greater_is_better = True

        def __call__(self, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            trained_at = model.max_seq_length
            set_max_length(model, student.max_seq_length)
            try:
                emb = model.encode([student.query_prefix + queries[q] for q in qids], batch_size=student.batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True)  # fmt: skip
            finally:
                set_max_length(model, trained_at)
            hits = view.top_k(np.asarray(emb, dtype=np.float32), 10)
            run = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
            return {VAL_METRIC: float(evaluate_run({q: qrels[q] for q in qids}, run)["nDCG@10"])}

    return TeacherIndex()
