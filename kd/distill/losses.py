"""Distillation losses as pure functions of score tensors, plus their weighted sum.

Shapes: a batch of B queries, each with a group of G = 1 + N passages (positive first).
`student`, `teacher`: [B, G] scores. The module `DistillLoss` only encodes and calls these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kd.config import LossConfig


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher margins (positive minus each negative) [Hofstätter et al. 2020]."""
    s_margin = student[:, :1] - student[:, 1:]
    t_margin = teacher[:, :1] - teacher[:, 1:]
    return F.mse_loss(s_margin, t_margin)


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each group's softmax at `temperature`, mean over queries."""
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def in_batch_infonce(q_emb: torch.Tensor, p_emb: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """InfoNCE: query i's positive is row `offset + i` of `p_emb`; every other passage is a negative.

    `p_emb` may hold more rows than queries (positives first, then the hard negatives), which
    only adds negatives; under data-parallel training it is every rank's batch, and `offset`
    is where this rank's positives start.
    """
    logits = q_emb @ p_emb.T / temperature
    target = torch.arange(q_emb.shape[0], device=q_emb.device) + offset
    return F.cross_entropy(logits, target)


def similarity_kl(
    s_q: torch.Tensor, s_p: torch.Tensor, t_q: torch.Tensor, t_p: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) over each query's row of the in-batch similarity matrix.

    Every passage in the batch (all queries' positives and negatives) is scored for every query,
    by student (`s_q @ s_p.T`) and teacher (`t_q @ t_p.T`, the teacher's own embedding space):
    a B x (B*G) list per step instead of G, at no extra encoding cost [RocketQAv2-style in-batch
    distillation]. Embeddings are normalised, so both sides are cosines on the same scale.
    """
    return listwise_kl(s_q @ s_p.T, t_q @ t_p.T, temperature)


def similarity_mse(s_q: torch.Tensor, s_p: torch.Tensor, t_q: torch.Tensor, t_p: torch.Tensor) -> torch.Tensor:
    """MSE between the student's and the teacher's in-batch cosine matrices (geometry, not just order)."""
    return F.mse_loss(s_q @ s_p.T, t_q @ t_p.T)


def embed_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cosine) between each (projected) student embedding and the teacher's embedding of the
    same text: the student learns the teacher's geometry, not only its order [EmbedDistill, Kim et al. 2023].

    For unit vectors this is half the squared distance, ||s - t||^2 = 2 (1 - cos(s, t)).

    Args:
        student: [N, D] student embeddings (mapped into the teacher's space when widths differ).
        teacher: [N, D] the teacher's embeddings of the same N texts.

    Example:
        >>> embed_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        tensor(1.)
    """
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def combined(
    q_emb: torch.Tensor,
    p_emb: torch.Tensor,
    teacher: torch.Tensor,
    w: LossConfig,
    t_q: torch.Tensor | None = None,
    t_p: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_p: torch.Tensor | None = None,
    offset: int = 0,
    student_passages: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the losses from normalised embeddings.

    q_emb: [B, D]; p_emb: [B, G, D] (positive at index 0); teacher: [B, G] scores.
    t_q: [B, T], t_p: [B, G, T]: the teacher's normalised embeddings (a bi-encoder teacher only),
    needed by the similarity-matrix terms and `embed`; `project` maps student embeddings into the
    teacher's space (a learned linear map, `embed` only). `batch_p`, `offset`: the passages the in-batch
    term contrasts against, positives first, and where this batch's positives start in it (data-parallel
    training: every rank's; default this batch's). `student_passages=False`: `p_emb` is the teacher's own passage
    matrix (asymmetric serving: the student encodes queries only), so `embed` compares queries alone.
    `embed` needs no `project` when the student already has the teacher's width (a student made from the teacher).
    Returns the total and each component's value (for the curves).
    """
    student = torch.einsum("bd,bgd->bg", q_emb, p_emb)
    flat_p = torch.cat([p_emb[:, 0], p_emb[:, 1:].reshape(-1, p_emb.shape[-1])])  # positives first
    parts = {
        "margin_mse": margin_mse(student, teacher),
        "listwise_kl": listwise_kl(student, teacher, w.kl_temperature),
        "in_batch": in_batch_infonce(q_emb, flat_p if batch_p is None else batch_p, w.in_batch_temperature, offset),
    }
    weights = {"margin_mse": w.margin_mse, "listwise_kl": w.listwise_kl, "in_batch": w.in_batch,
               "sim_kl": w.sim_kl, "sim_mse": w.sim_mse, "embed": w.embed}  # fmt: skip
    if t_q is not None and t_p is not None:
        flat_t = torch.cat([t_p[:, 0], t_p[:, 1:].reshape(-1, t_p.shape[-1])])
        parts["sim_kl"] = similarity_kl(q_emb, flat_p, t_q, flat_t, w.sim_temperature)
        parts["sim_mse"] = similarity_mse(q_emb, flat_p, t_q, flat_t)
        s_side = torch.cat([q_emb, flat_p]) if student_passages else q_emb
        t_side = torch.cat([t_q, flat_t]) if student_passages else t_q
        if project is not None:
            parts["embed"] = embed_cosine(project(s_side), t_side)
        elif s_side.shape[-1] == t_side.shape[-1]:
            parts["embed"] = embed_cosine(s_side, t_side)
    elif w.sim_kl or w.sim_mse or w.embed:
        raise ValueError("loss.sim_kl / loss.sim_mse / loss.embed need the teacher's embeddings (a bi-encoder teacher)")
    if w.embed and "embed" not in parts:
        raise ValueError("loss.embed needs a projection from the student's to the teacher's embedding space")
    total = sum(weights[k] * v for k, v in parts.items() if weights[k])
    if not isinstance(total, torch.Tensor):
        raise ValueError("all loss weights are 0: set loss.margin_mse, loss.listwise_kl, loss.in_batch, loss.sim_kl or loss.embed > 0")
    return total, {k: float(v.detach()) for k, v in parts.items()}
