"""Weight mixing (WiSE-FT): the trained student moved part of the way back toward its starting weights."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from kd.distill.dev import VAL_METRIC
from kd.errors import ConfigError


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


