"""Distillation losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kd.config import LossConfig
from kd.distill.losses import (
    combined,
    embed_cosine,
    in_batch_infonce,
    listwise_kl,
    margin_mse,
    similarity_kl,
    similarity_mse,
)

LN3 = math.log(3)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=True)


def test_margin_mse():
    # row 1: student margins 3-1, 3-2 = [2, 1]; teacher 2-1, 2-1 = [1, 1]; squared errors [1, 0]
    # row 2: student margins [0, 0]; teacher 1-0, 1-3 = [1, -2]; squared errors [1, 4]
    # mean over the 4 margins: (1 + 0 + 1 + 4) / 4 = 1.5
    student = t([[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    loss = margin_mse(student, t([[2.0, 1.0, 1.0], [1.0, 0.0, 3.0]]))
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    # d/ds_pos of (1/4) * sum (s_pos - s_neg - m)^2 for row 1: (2/4) * (1 + 0) = 0.5
    assert student.grad[0, 0].item() == pytest.approx(0.5)


def test_listwise_kl():
    # teacher [ln3, 0] at T=1 -> p = [3/4, 1/4]; student [0, 0] -> q = [1/2, 1/2]
    # KL(p || q) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304099 - 0.173287 = 0.130812
    # second query: student == teacher, KL 0; batchmean -> 0.130812 / 2
    student = t([[0.0, 0.0], [1.0, 2.0]])
    teacher = t([[LN3, 0.0], [1.0, 2.0]])
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    loss = listwise_kl(student, teacher, temperature=1.0)
    assert loss.item() == pytest.approx(expected)
    assert expected == pytest.approx(0.130812 / 2, abs=1e-6)
    # the same distributions at T=0.5 from halved scores
    assert listwise_kl(student / 2, teacher / 2, 0.5).item() == pytest.approx(expected)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_in_batch_infonce():
    # q = p = identity, T=1: logits = I; each row: -log(e / (e + 1)) = log(1 + 1/e) = 0.313262
    eye = t([[1.0, 0.0], [0.0, 1.0]])
    assert in_batch_infonce(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # one extra (hard negative) row [1, 0]: row 0 logits [1, 0, 1] -> log(2 + 1/e) = 0.861995
    # row 1 logits [0, 1, 0] -> log(1 + 2/e) = 0.551444; mean 0.706720
    q = t([[1.0, 0.0], [0.0, 1.0]])
    p = t([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    loss = in_batch_infonce(q, p, 1.0)
    assert loss.item() == pytest.approx((math.log(2 + math.exp(-1)) + math.log(1 + 2 * math.exp(-1))) / 2)
    assert loss.item() == pytest.approx(0.706720, abs=1e-6)
    loss.backward()
    assert q.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_zero_when_student_equals_teacher():
    scores = torch.tensor([[0.9, 0.2, -0.1], [0.5, 0.4, 0.3]])
    assert margin_mse(scores, scores).item() == 0.0
    assert listwise_kl(scores, scores, 0.05).item() == pytest.approx(0.0, abs=1e-7)
    assert margin_mse(scores, scores + 1.0).item() == pytest.approx(0.0)  # only margins matter


def test_combined():
    # q = [1, 0]; passages [1, 0] (positive) and [0, 1] -> student scores [1, 0]; teacher [0, 0]
    # margin_mse: (1 - 0)^2 = 1
    # listwise_kl (T=1): p = [1/2, 1/2], q = softmax([1, 0]) = [0.731059, 0.268941]
    #   = 1/2 ln(0.5/0.731059) + 1/2 ln(0.5/0.268941) = (-0.379885 + 0.620115) / 2 = 0.120115
    # in_batch (T=1): rows [1,0], [0,1]; logits [1, 0] -> log(1 + 1/e) = 0.313262
    # total = 0.6 * 1 + 0.2 * 0.120115 + 0.2 * 0.313262 = 0.686675
    q = t([[1.0, 0.0]])
    p = t([[[1.0, 0.0], [0.0, 1.0]]])
    w = LossConfig(0.6, 0.2, 0.2, kl_temperature=1.0, in_batch_temperature=1.0)
    total, parts = combined(q, p, torch.tensor([[0.0, 0.0]], dtype=torch.float64), w)
    assert parts["margin_mse"] == pytest.approx(1.0)
    assert parts["listwise_kl"] == pytest.approx(0.120115, abs=1e-6)
    assert parts["in_batch"] == pytest.approx(0.313262, abs=1e-6)
    assert total.item() == pytest.approx(0.686675, abs=1e-6)
    total.backward()
    assert q.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_combined_skips_zero_weights_and_reports_all_parts():
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1)
    teacher = torch.randn(4, 3)
    total, parts = combined(q, p, teacher, LossConfig(0.0, 0.0, 1.0))
    assert total.item() == pytest.approx(parts["in_batch"], rel=1e-6)
    assert set(parts) == {"margin_mse", "listwise_kl", "in_batch"}


def test_combined_all_weights_zero():
    q = torch.ones(1, 2)
    with pytest.raises(ValueError, match="all loss weights are 0"):
        combined(q, torch.ones(1, 2, 2), torch.zeros(1, 2), LossConfig(0.0, 0.0, 0.0))


def test_similarity_kl_by_hand():
    # student q = [1, 0]; batch passages [1, 0], [0, 1] -> student row [1, 0]
    # teacher q = [1, 0]; teacher passages [1, 0], [1, 0] -> teacher row [1, 1] -> p = [1/2, 1/2]
    # at T=1 this is the combined() listwise example: KL = 0.120115
    s_q, s_p = t([[1.0, 0.0]]), t([[1.0, 0.0], [0.0, 1.0]])
    t_q, t_p = t([[1.0, 0.0]]), t([[1.0, 0.0], [1.0, 0.0]])
    loss = similarity_kl(s_q, s_p, t_q, t_p, 1.0)
    assert loss.item() == pytest.approx(0.120115, abs=1e-6)
    loss.backward()
    assert s_q.grad.abs().sum() > 0 and s_p.grad.abs().sum() > 0
    # teacher and student in different dimensions: only the similarity matrices are compared
    t3 = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)
    assert similarity_kl(s_q, s_p, t3, torch.cat([t3, t3]), 1.0).item() == pytest.approx(0.120115, abs=1e-6)


def test_similarity_mse_by_hand():
    # student matrix [[1, 0]], teacher [[1, 1]]: squared errors [0, 1], mean 0.5
    s_q, s_p = t([[1.0, 0.0]]), t([[1.0, 0.0], [0.0, 1.0]])
    t_q, t_p = t([[1.0, 0.0]]), t([[1.0, 0.0], [1.0, 0.0]])
    assert similarity_mse(s_q, s_p, t_q, t_p).item() == pytest.approx(0.5)
    assert similarity_mse(s_q, s_p, s_q, s_p).item() == 0.0


def test_combined_with_teacher_embeddings_flattens_the_batch():
    # B=2, G=2: the similarity terms see every query against all 4 passages (positives first),
    # so a student equal to the teacher in its own space has sim_mse 0 even in another dimension
    q = torch.nn.functional.normalize(torch.randn(2, 4, dtype=torch.float64), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(2, 2, 4, dtype=torch.float64), dim=-1)
    rot = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]  # teacher = rotated student: same cosines
    scores = torch.einsum("bd,bgd->bg", q, p)
    w = LossConfig(0.0, 0.0, 0.0, sim_kl=1.0, sim_mse=1.0)
    total, parts = combined(q, p, scores, w, q @ rot, p @ rot)
    assert parts["sim_mse"] == pytest.approx(0.0, abs=1e-12)
    assert parts["sim_kl"] == pytest.approx(0.0, abs=1e-9)
    wrong = torch.nn.functional.normalize(torch.randn(2, 2, 4, dtype=torch.float64), dim=-1)
    total, parts = combined(q, p, scores, w, q, wrong)
    assert parts["sim_mse"] > 0 and total.item() == pytest.approx(parts["sim_kl"] + parts["sim_mse"])


def test_similarity_terms_without_teacher_embeddings_are_an_error():
    q = torch.ones(1, 2)
    with pytest.raises(ValueError, match="sim_kl"):
        combined(q, torch.ones(1, 2, 2), torch.zeros(1, 2), LossConfig(1.0, 0.0, 0.0, sim_kl=0.5))


def test_embed_cosine_by_hand():
    # cosines 1 (same direction, other length) and 0 (orthogonal): mean (1 - 1 + 1 - 0) / 2 = 0.5
    student = t([[2.0, 0.0], [0.0, 1.0]])
    loss = embed_cosine(student, t([[1.0, 0.0], [1.0, 0.0]]))
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert student.grad[0].abs().sum().item() == pytest.approx(0.0, abs=1e-12)  # already aligned: no pull
    assert student.grad[1, 0].item() < 0  # row 2 is pulled toward the teacher's direction (+x)


def test_combined_embed_goes_through_the_projection():
    # B=1, G=2, student in 2 dims, teacher in 3: the map sends the student exactly onto the teacher
    q = t([[1.0, 0.0]])
    p = t([[[0.0, 1.0], [1.0, 0.0]]])
    lift = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    scores = torch.einsum("bd,bgd->bg", q, p).detach()
    w = LossConfig(0.0, 0.0, 0.0, embed=1.0)
    total, parts = combined(q, p, scores, w, q.detach() @ lift, p.detach() @ lift, lambda e: e @ lift)
    assert parts["embed"] == pytest.approx(0.0, abs=1e-12) and total.item() == pytest.approx(0.0, abs=1e-12)
    swap = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # a wrong map: every text off
    total, parts = combined(q, p, scores, w, q.detach() @ lift, p.detach() @ lift, lambda e: e @ swap)
    assert parts["embed"] == pytest.approx(1.0) and total.item() == pytest.approx(1.0)


def test_embed_without_projection_or_teacher_embeddings_is_an_error():
    q, p = torch.ones(1, 2), torch.ones(1, 2, 2)
    with pytest.raises(ValueError, match="loss.embed"):
        combined(q, p, torch.zeros(1, 2), LossConfig(0.0, 0.0, 0.0, embed=1.0))
    wide_q, wide_p = torch.ones(1, 3), torch.ones(1, 2, 3)  # the teacher is wider than the student: a map is needed
    with pytest.raises(ValueError, match="projection"):
        combined(q, p, torch.zeros(1, 2), LossConfig(0.0, 0.0, 0.0, embed=1.0), wide_q, wide_p)


def test_embed_needs_no_projection_at_the_teachers_width():
    # a student made from the teacher lives in its space: the term compares embeddings directly
    e = torch.eye(3, dtype=torch.float64)
    q, p = e[:1], torch.stack([e[1:3]])  # [1, 3], [1, 2, 3]
    w = LossConfig(0.0, 0.0, 0.0, embed=1.0)
    total, parts = combined(q, p, torch.zeros(1, 2, dtype=torch.float64), w, q.clone(), p.clone())
    assert parts["embed"] == pytest.approx(0.0, abs=1e-12)
    # the teacher sees the query as the first passage: the query's term is 1 - cos = 1, the passages' 0 -> mean 1/3
    total, parts = combined(q, p, torch.zeros(1, 2, dtype=torch.float64), w, e[1:2], p.clone())
    assert parts["embed"] == pytest.approx(1 / 3)


def test_embed_compares_queries_only_when_the_passages_are_the_teachers():
    # asymmetric training: p_emb is the teacher's own matrix, so only the query side can be off
    e = torch.eye(3, dtype=torch.float64)
    q, t_p = e[:1], torch.stack([e[1:3]])
    w = LossConfig(0.0, 0.0, 0.0, embed=1.0)
    _, parts = combined(q, t_p, torch.zeros(1, 2, dtype=torch.float64), w, e[1:2], t_p, student_passages=False)
    assert parts["embed"] == pytest.approx(1.0)  # not diluted by the (identical) passage rows


def test_in_batch_infonce_offset_points_at_this_ranks_positives():
    # rank 1 of 2 under DDP: its two queries' positives are rows 2 and 3 of the gathered passages
    gathered = torch.eye(4)
    q = torch.eye(4)[2:]
    # each query scores 1 on its own positive, 0 on the 3 others: log(1 + 3/e) at T = 1
    want = math.log(1 + 3 * math.exp(-1))
    assert in_batch_infonce(q, gathered, 1.0, offset=2).item() == pytest.approx(want, abs=1e-6)
    # without the offset the targets would be rows 0 and 1: a much larger loss (log(1 + e) + ...)
    assert in_batch_infonce(q, gathered, 1.0).item() > want + 1.0
