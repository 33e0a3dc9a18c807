"""bench.frontier: every point composes to valid params, FLOPs per token, and the report from its CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import frontier
from bench.common import append_rows
from kd.compose import compose
from kd.config import ModelConfig, params_from_dict


@pytest.mark.parametrize("point", sorted(frontier.POINTS))
def test_every_point_composes_to_valid_params(point):
    p = params_from_dict(compose([*frontier.POINTS[point], "data=sqlalchemy_docs_faq", "train.seed=2"]))
    assert p.index.passages == ("teacher" if point.endswith("_asym") else "student")
    assert p.train.seed == 2 and p.data.debian_package == "python-sqlalchemy-doc"
    if point != "minilm_sym":
        assert p.loss.embed == 1.0 and p.mining.pseudo_queries == 2000


def test_flops_per_token_of_a_static_model_is_its_width():
    from kd.models import initial_student, load_bi_encoder

    static = load_bi_encoder(initial_student(ModelConfig(model="minilm", kind="static", backend="torch",
                                                         corpus_backend="torch")))  # fmt: skip
    full = load_bi_encoder("minilm")
    cut = load_bi_encoder(initial_student(ModelConfig(model="minilm", layers=[0, 2, 5])))
    assert frontier.flops_per_token(static) == 384
    # six layers of ~1.77M weights each, two FLOPs per weight: ~21M; half the layers, half the FLOPs
    assert 20e6 < frontier.flops_per_token(full) < 23e6
    assert frontier.flops_per_token(cut) == pytest.approx(frontier.flops_per_token(full) / 2, rel=0.01)


def test_report_summarises_seeds_and_costs(tmp_path, monkeypatch):
    for name in ("OUT", "COSTS", "PLOT", "REPORT"):
        monkeypatch.setattr(frontier, name, tmp_path / Path(getattr(frontier, name)).name)
    rows = [
        {"point": "static_asym", "student": "static", "mode": "asymmetric", "data": "python_docs_faq", "seed": s,
         "split": "test", "queries": 90, "bm25": 0.3, "untrained": 0.2, "kd": kd, "teacher": 0.6,
         "kd_vs_untrained_p": p, "cpu": "no-bf16"}
        for s, kd, p in ((13, 0.50, 1e-5), (1, 0.54, 2e-4))
    ]  # fmt: skip
    append_rows(frontier.OUT, frontier.FIELDS, rows)
    costs = [
        {"student": "teacher", "mode": "", "backend": "torch", "query_p50_ms": 20.0, "cpu": "no-bf16"},
        {"student": "static", "mode": "asymmetric", "backend": "torch", "query_p50_ms": 0.2,
         "corpus_passages_per_s": 5.0, "corpus_encoder": "teacher", "cpu": "no-bf16"},
    ]  # fmt: skip
    append_rows(frontier.COSTS, frontier.COST_FIELDS, costs)
    text = frontier.report()
    line = next(x for x in text.splitlines() if x.startswith("| static_asym"))
    assert "| 2 | 0.2000 | 0.5200 (0.5000-0.5400) | 0.6000 | 86.7% | 0.0002 | 0.2 | 100 |" in line
    with frontier.PLOT.open(newline="") as fh:
        plot = list(csv.DictReader(fh))
    assert {r["system"] for r in plot} == {"static_asym (python_docs_faq, test)",
                                          "static_asym untrained (python_docs_faq, test)",
                                          "teacher (python_docs_faq, test)"}  # fmt: skip
    assert frontier.REPORT.read_text() == text
