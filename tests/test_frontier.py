"""bench.frontier: every point composes to valid params, FLOPs per token, and the report from its CSVs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import frontier
from bench.common import append_rows
from kd.compose import compose
from kd.config import ModelConfig
from kd.params import params_from_dict


@pytest.mark.parametrize("point", sorted(frontier.POINTS))
def test_every_point_composes_to_valid_params(point):
    p = params_from_dict(compose([*frontier.POINTS[point], "data=sqlalchemy_docs_faq", "train.seed=2"]))
    assert p.index.passages == ("teacher" if point.endswith("_asym") else "student")
    assert p.train.seed == 2 and p.data.debian_package == "python-sqlalchemy-doc"
    if point != "minilm_sym":
        assert p.loss.embed == 1.0 and p.mining.pseudo_queries == 2000


def test_flops_per_token_of_a_static_model_is_its_width():
    from kd.models.loading import load_bi_encoder
    from kd.models.student_families import initial_student

    static = load_bi_encoder(initial_student(ModelConfig(model="minilm", kind="static", backend="torch",
                                                         corpus_backend="torch")))  # fmt: skip
    full = load_bi_encoder("minilm")
    cut = load_bi_encoder(initial_student(ModelConfig(model="minilm", layers=[0, 2, 5])))
    assert frontier.flops_per_token(static) == 384
    # six layers of ~1.77M weights each, two FLOPs per weight: ~21M; half the layers, half the FLOPs
    assert 20e6 < frontier.flops_per_token(full) < 23e6
    assert frontier.flops_per_token(cut) == pytest.approx(frontier.flops_per_token(full) / 2, rel=0.01)


@pytest.fixture
def report_files(tmp_path, monkeypatch):
    """The report's CSVs and outputs moved into `tmp_path`, which is returned."""
    for name in ("OUT", "COSTS", "PLOT", "REPORT"):
        monkeypatch.setattr(frontier, name, tmp_path / Path(getattr(frontier, name)).name)
    return tmp_path


def test_report_summarises_seeds_and_costs(report_files):
    rows = [
        {"point": "static_asym", "student": "static", "mode": "asymmetric", "data": "python_docs_faq", "seed": s,
         "split": "test", "queries": 90, "bm25": 0.3, "untrained": 0.2, "kd": kd, "teacher": 0.6,
         "kd_vs_untrained_p": p, "cpu": "no-bf16"}
        for s, kd, p in ((13, 0.50, 1e-5), (1, 0.54, 2e-4))
    ]  # fmt: skip
    uncosted = {**rows[0], "point": "minilm_l3_sym", "student": "minilm_l3", "mode": "symmetric"}
    # appended last, a bf16 run's teacher score must not replace the float32 one on the plot
    bf16_run = {**uncosted, "point": "mpnet_l4_sym", "student": "mpnet_l4", "teacher": 0.59, "cpu": "bf16"}
    append_rows(frontier.OUT, frontier.FIELDS, [*rows, uncosted, bf16_run])
    costs = [
        {"student": "teacher", "mode": "", "backend": "torch", "query_p50_ms": 20.0, "cpu": "no-bf16"},
        {"student": "static", "mode": "asymmetric", "backend": "torch", "query_p50_ms": 0.2,
         "corpus_passages_per_s": 5.0, "corpus_encoder": "teacher", "cpu": "no-bf16"},
    ]  # fmt: skip
    append_rows(frontier.COSTS, frontier.COST_FIELDS, costs)
    text = frontier.report()
    line = next(x for x in text.splitlines() if x.startswith("| static_asym"))
    assert "| 2 | 0.2000 | 0.5200 (0.5000-0.5400) | 0.6000 | 86.7% | 0.0002 | 0.2 | 100 |" in line
    # a point with no cost row on this machine: its latency columns say so, and it stays off the plot
    line = next(x for x in text.splitlines() if x.startswith("| minilm_l3_sym | python"))
    assert line.endswith("| - | - |") and "nan" not in text
    with frontier.PLOT.open(newline="") as fh:
        plot = list(csv.DictReader(fh))
    assert {r["system"] for r in plot} == {"static_asym (python_docs_faq, test)",
                                          "static_asym untrained (python_docs_faq, test)",
                                          "teacher (python_docs_faq, test)"}  # fmt: skip
    assert next(r for r in plot if r["system"].startswith("teacher"))["ndcg@10"] == "0.6"
    assert frontier.REPORT.read_text() == text


def test_report_applies_the_rule_to_each_machine_cost_table(report_files):
    rows = _dev_rows("minilm_sym", "minilm", "symmetric", 0.59) + _dev_rows("minilm_l3_sym", "minilm_l3", "symmetric", 0.45)
    append_rows(frontier.OUT, frontier.FIELDS, [{**r, "bm25": 0.1, "kd_vs_untrained_p": 0.5, "cpu": "no-bf16"} for r in rows])
    append_rows(frontier.COSTS, frontier.COST_FIELDS, [{**c, "cpu": "no-bf16"} for c in COSTS])
    # a second machine measured the cut MiniLM, which this machine's table lacks
    other = report_files / "other_cpu" / "frontier_costs.csv"
    other.parent.mkdir()
    append_rows(other, frontier.COST_FIELDS, [{**c, "cpu": "no-bf16"} for c in COSTS[:2]]
                + [{"student": "minilm_l3", "mode": "symmetric", "backend": "onnx", "query_p50_ms": "3", "cpu": "no-bf16"}])
    text = frontier.report()
    here, there = text.split("## Cost on `other_cpu`")
    assert "| minilm_l3_sym | 0.4500 | 0.3000 | 0.6000 | 0.750 | - | - | no: no cost measured |" in here
    assert "| minilm_l3_sym | 0.4500 | 0.3000 | 0.6000 | 0.750 | 3 | 20 | yes |" in there
    # minilm_sym has no cost row there: not eligible on that table, so the cut model becomes its default
    assert "Default by the rule: **minilm_sym**." in here and "Default by the rule: **minilm_l3_sym**." in there


def _dev_rows(point, student, mode, kd, untrained=0.30, teacher=0.60, seeds=("13", "1", "2")):
    return [{"point": point, "student": student, "mode": mode, "data": d, "split": sp, "seed": s, "queries": q,
             "kd": kd, "untrained": untrained, "teacher": teacher}
            for s in seeds for (d, sp), q in zip(frontier.DEV_PARTS, (54, 11, 34, 11))]  # fmt: skip


COSTS = [
    {"student": "teacher", "mode": "", "backend": "torch", "query_p50_ms": "100"},
    {"student": "teacher", "mode": "", "backend": "onnx", "query_p50_ms": "60"},
    {"student": "static", "mode": "asymmetric", "backend": "torch", "query_p50_ms": "0.5"},
    {"student": "minilm", "mode": "symmetric", "backend": "onnx", "query_p50_ms": "10"},
    {"student": "mpnet_l4", "mode": "asymmetric", "backend": "onnx", "query_p50_ms": "25"},
]


def test_pooled_dev_weights_questions_and_needs_every_part_and_seed():
    rows = _dev_rows("a", "static", "asymmetric", 0.5)
    rows[0] = {**rows[0], "kd": 0.0}  # CPython dev, seed 13: 54 of 110 questions score 0 on that seed
    assert frontier.pooled(rows, "kd") == pytest.approx((0.5 * 56 / 110 + 0.5 + 0.5) / 3)
    assert frontier.pooled(rows[1:], "kd") is None  # one part of one seed missing


def test_decision_rule_takes_the_fastest_point_near_the_teacher_else_the_best_ratio():
    rows = _dev_rows("static_asym", "static", "asymmetric", 0.40, untrained=0.05)
    rows += _dev_rows("minilm_sym", "minilm", "symmetric", 0.59)
    rows += _dev_rows("mpnet_l4_asym", "mpnet_l4", "asymmetric", 0.61)  # near the teacher, but only 2.4x cheaper
    choice, table = frontier.decide(rows, COSTS)
    assert choice == "minilm_sym"  # the only eligible point at >= 0.97 x the teacher
    standing = {t["point"]: t for t in table}
    assert "2.4x cheaper" in standing["mpnet_l4_asym"]["why_not"] and standing["static_asym"]["eligible"]
    # nobody near the teacher: the best ratio wins; within 0.005 of it, the faster one
    rows = _dev_rows("static_asym", "static", "asymmetric", 0.400, untrained=0.05) + _dev_rows(
        "minilm_sym", "minilm", "symmetric", 0.402
    )
    assert frontier.decide(rows, COSTS)[0] == "static_asym"
    rows = _dev_rows("static_asym", "static", "asymmetric", 0.40, untrained=0.05) + _dev_rows(
        "minilm_sym", "minilm", "symmetric", 0.50
    )
    assert frontier.decide(rows, COSTS)[0] == "minilm_sym"
    # a point below its own untrained start, or missing a seed, is not eligible; none eligible: the former default
    rows = _dev_rows("static_asym", "static", "asymmetric", 0.20, untrained=0.25) + _dev_rows(
        "minilm_sym", "minilm", "symmetric", 0.59, seeds=("13", "1")
    )
    choice, table = frontier.decide(rows, COSTS)
    assert choice == frontier.FORMER_DEFAULT and not any(t["eligible"] for t in table)
