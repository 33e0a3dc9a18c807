"""The learning curves of one training run (loss per step, dev nDCG@10 per epoch, WiSE-FT mixes),
which epoch is kept, and what artifacts/train holds: the CSVs dvc plots draws and the run's summary.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd.atomic import atomic_path
from kd.distill.mixing import wise_ft

if TYPE_CHECKING:
    import torch


@dataclass
class Curves:
    """What the trainer saw, for dvc plots and MLflow."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    mixes: list[dict[str, float]] = field(default_factory=list)  # dev score per WiSE-FT mix (`wise_ft`)

    def best(self) -> dict[str, float]:
        """The epoch the trainer kept (best dev nDCG@10); row 0, the untrained model, only when nothing trained."""
        return max(self.epochs[1:] or self.epochs, key=lambda r: r["dev_ndcg@10"])

    def mix(self, model: Any, initial: dict[str, torch.Tensor], evaluator: Any, alpha: float, grid: Iterable[float]) -> float:
        """Leave `model` at WiSE-FT mix `alpha` toward `initial` (`kd.distill.mixing.wise_ft`), record the dev
        curve over `grid` in `mixes`, and return the saved model's dev score. The untrained and the kept
        epoch's scores are known already, so they cost no dev pass."""
        known = {0.0: self.epochs[0]["dev_ndcg@10"], 1.0: self.best()["dev_ndcg@10"]}
        score, self.mixes = wise_ft(model, initial, evaluator, alpha, grid, known)
        return score

    def summary(self, saved_score: float, interpolate: float, dev_pool_size: int, groups: int,
                corpus_loss: list[float]) -> dict[str, Any]:  # fmt: skip
        """artifacts/train/metrics.json: the kept epoch, the saved weights' dev score (that epoch's unless
        `train.interpolate` < 1), the untrained start, the pool searched, and the losses."""
        best = self.best()
        return {
            "best_epoch": best["epoch"],
            "best_dev_pool_ndcg@10": best["dev_ndcg@10"],
            "interpolate": interpolate,
            "dev_pool_ndcg@10": saved_score,
            "untrained_dev_pool_ndcg@10": self.epochs[0]["dev_ndcg@10"],
            "dev_pool_size": dev_pool_size,
            "final_loss": self.steps[-1]["total"] if self.steps else float("nan"),
            "train_groups": groups,
            "corpus_fit_loss": corpus_loss,  # per epoch of train.corpus_epochs (empty when 0)
        }

    def write(self, out_dir: Path) -> None:
        """Write loss.csv (steps), dev.csv (epochs), interpolate.csv (WiSE-FT mixes) under `out_dir`; skip empty ones."""
        for name, rows in (("loss.csv", self.steps), ("dev.csv", self.epochs), ("interpolate.csv", self.mixes)):
            if not rows:
                continue
            with atomic_path(out_dir / name) as tmp, tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
