"""bench/latency.py times the service's own Engine on real artifacts (the smoke run's), not a copy of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import latency, seeds, service_load


@pytest.mark.slow
def test_latency_times_the_shipped_engine(smoke_repo: Path, smoke_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KD_CACHE_DIR", str(smoke_cache))
    out = tmp_path / "results"
    rc = latency.main(["--root", str(smoke_repo), "--reps", "5", "--warmup", "1", "--rerank-reps", "3",
                       "--rerank-depth", "20", "--profile", "5", "--out", str(out)])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "latency.json").read_text())
    stats = data["stats"]
    backend = data["params"]["student"]["backend"]
    for call in ("encode", "search", "faiss@10", "faiss@20", "encode x4 (one call)", "encode x8 (one call)"):
        assert stats[f"{backend} {call}"]["n"] == 5 and stats[f"{backend} {call}"]["p50"] > 0
    if data["rerank_mode"]:
        assert stats[f"{backend} rerank@20"]["n"] == 3
    # the profile is of the service's code path, by file
    assert "service/engine.py" in (out / "profile_request.txt").read_text()


@pytest.mark.slow
def test_latency_names_the_missing_artifact(smoke_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((smoke_repo / "params.yaml").read_text())
    with pytest.raises(SystemExit, match=r"artifacts/student.*dvc repro train"):
        latency.main(["--root", str(tmp_path), "--no-rerank", "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_service_load_runs_every_scenario_against_real_servers(
    smoke_repo: Path, smoke_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    """bench.service_load end to end on the smoke artifacts: real `python -m service` processes over loopback."""
    monkeypatch.setenv("KD_CACHE_DIR", str(smoke_cache))
    out = tmp_path / "service_load.json"
    art = smoke_repo / "artifacts"
    argv = ["--student", str(art / "student"), "--index", str(art / "index"), "--params", str(smoke_repo / "params.yaml"),
            "--requests", "5", "--rounds", "1", "--rerank-requests", "2", "--mixed-plain", "20", "--warmup", "1",
            "--plain-rate", "20", "--out", str(out)]  # fmt: skip
    if (art / "teacher_corpus").is_dir():
        argv += ["--teacher-corpus", str(art / "teacher_corpus")]
    assert service_load.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["plain_auth_rate_limit_off"]["status"] == {"200": 5}
    assert report["plain_auth_rate_limit_on"]["status"] == {"200": 5}  # through the API key and the rate limiter
    for name in ("mixed_1_rerank_4_plain", "control_4_plain_no_rerank", "mixed_paced"):
        assert report[name]["plain_requests"] == 20 and report[name]["errors"] == 0, report[name]
    assert report["mixed_1_rerank_4_plain"]["rerank_requests"] >= 1
    # paced: 4 clients at 20 requests/s each cannot send faster than their schedule (~80/s)
    assert report["mixed_paced"]["plain_rps"] <= 4 * 20 * 1.2
    assert report["mixed_paced"]["plain_rate_per_client"] == 20
    assert "mixed, paced" in report["table"]


def test_service_load_refuses_a_negative_rate() -> None:
    with pytest.raises(SystemExit):
        service_load.main(["--plain-rate", "-1"])


def test_seeds_rows_and_markdown_carry_each_seed_and_the_mean() -> None:
    def split(kd: float) -> dict:
        table = {s: {"nDCG@10": v} for s, v in (("bm25", 0.2), ("untrained", 0.5), ("kd", kd), ("teacher", 0.7))}
        return {"table": table, "student_over_teacher": kd / 0.7, "gap_closed": (kd - 0.5) / 0.2,
                "kd_vs_untrained_ndcg@10": {"t_pvalue": 0.04}, "kd_ndcg@10_by_query_backend": {"onnx-int8": kd - 0.01}}  # fmt: skip

    rows = []
    for seed, kd in ((13, 0.6), (1, 0.64)):
        new = seeds.rows_from_metrics({"queries": {"dev": 3, "test": 5}, "dev": split(kd), "test": split(kd - 0.05)}, "cfg", seed, "bf16", "loss.embed=1.0")
        assert [r["split"] for r in new] == ["dev", "test"] and set(new[0]) == set(seeds.FIELDS)
        assert new[1]["kd nDCG@10"] == round(kd - 0.05, 4) and new[0]["kd+rerank@10 nDCG@10"] == ""  # not computed
        assert (new[0]["queries"], new[1]["queries"]) == (3, 5)
        rows += [{k: str(v) for k, v in r.items()} for r in new]
    md = seeds.markdown(rows)
    assert "## cfg: `loss.embed=1.0` + `train.seed=N`" in md
    assert "**0.6200** (0.6000–0.6400)" in md and "**0.5700** (0.5500–0.5900)" in md  # dev and test KD: mean (range)
    assert md.count("| dev | 13 | bf16 |") == 1 and "mean of 2" in md


def test_pooled_counts_each_question_once_and_names_missing_parts() -> None:
    def row(config: str, seed: str, split: str, n: int, kd: float) -> dict[str, str]:
        return {"config": config, "train_seed": seed, "split": split, "queries": str(n),
                "untrained nDCG@10": "0.5", "kd nDCG@10": str(kd), "teacher nDCG@10": "0.7"}  # fmt: skip

    rows = [row("a", "13", "dev", 30, 0.60), row("b", "13", "dev", 10, 0.80), row("b", "13", "test", 60, 0.70),
            row("a", "1", "dev", 30, 0.50), row("b", "1", "dev", 10, 0.50)]  # fmt: skip
    parts = [("a", "dev"), ("b", "dev"), ("b", "test")]
    out = seeds.pooled(rows, parts)
    assert [r["train_seed"] for r in out] == ["13"]  # seed 1 lacks b:test, so it is not pooled
    assert out[0]["queries"] == 100 and out[0]["kd nDCG@10"] == 0.68  # (30*.6 + 10*.8 + 60*.7) / 100, not .70
    assert "| **mean of 1** | 100 | 0.5000 | 0.6800 | 0.7000 |" in seeds.pooled_markdown(parts, out)
    with pytest.raises(SystemExit, match="c:dev: no such rows"):
        seeds.pooled(rows, [("c", "dev")])
    with pytest.raises(SystemExit, match="without a question count"):
        seeds.pooled([{**rows[0], "queries": ""}], [("a", "dev")])


def test_append_rows_writes_one_header_and_survives_a_replaced_file(tmp_path: Path) -> None:
    from bench.common import append_rows

    out = tmp_path / "rows.csv"
    append_rows(out, ["a", "b"], [{"a": 1, "b": 2}])
    replaced = tmp_path / "copy.csv"
    replaced.write_text(out.read_text())
    replaced.replace(out)  # what `dvc exp run` does to a tracked file between runs: a new inode
    append_rows(out, ["a", "b"], [{"a": 3, "b": 4}])
    assert out.read_text().splitlines() == ["a,b", "1,2", "3,4"]


def test_results_carry_no_machine_paths(tmp_path: Path) -> None:
    """bench.portable: paths in the repository or a scratch copy become relative, installed code
    `site-packages/...`, anything else `.../<name>`; routes and URLs are left alone."""
    import sys

    from bench.common import write_results
    from bench.portable import REPO, portable_text

    copy = tmp_path / "copy"
    text = (
        f"root `{REPO}` log {copy}/bench/results/stage_logs/data.log student {REPO}/artifacts/student "
        f"torch {sys.prefix}/lib/python3.11/site-packages/torch/nn/modules/module.py:12(f) os {sys.prefix}/lib/python3.11/os.py:3 "
        f"out {tmp_path}/sl.json route /search/batch url http://127.0.0.1:8000/schema/openapi.json"
    )
    assert portable_text(text, (copy,)) == (
        "root `.` log bench/results/stage_logs/data.log student artifacts/student "
        "torch site-packages/torch/nn/modules/module.py:12(f) os python3.11/os.py:3 "
        "out .../sl.json route /search/batch url http://127.0.0.1:8000/schema/openapi.json"
    )
    js, md = write_results("x", {"student": REPO / "artifacts/student", "n": 3}, f"in {tmp_path}\n", tmp_path)
    assert json.loads(js.read_text()) == {"student": "artifacts/student", "n": 3}
    assert md.read_text() == f"in .../{tmp_path.name}\n"


def test_stage_times_reads_each_pass_with_its_rate_and_kernel(tmp_path: Path, caplog) -> None:
    """A real local encode pass logs one `pass:` line; stage_times turns it into a row (and a resumed
    pass reports nothing computed)."""
    import logging

    from bench.stage_times import markdown, passes
    from kd.compute import ModelSpec, encode_texts
    from kd.config import ComputeConfig, ModelConfig

    spec = ModelSpec.student(ModelConfig(model="minilm", dtype="float32", max_seq_length=32))
    texts = [f"passage {i} about copying files" for i in range(6)]
    with caplog.at_level(logging.INFO, logger="kd.compute"):
        encode_texts(texts, spec, ComputeConfig(backend="local", batch_size=4), tmp_path / "shards")
        encode_texts(texts, spec, ComputeConfig(backend="local", batch_size=4), tmp_path / "shards")
    first, again = passes(caplog.text)
    assert first["op"] == "encode" and first["role"] == "student" and first["items"] == 6 and first["computed"] == 6
    assert first["kernel"] == "torch/float32" and first["per_s"] > 0
    assert again["computed"] == 0 and again["per_s"] == 0.0  # every shard came from the kept ones
    table = markdown({"repo": "r", "started": "t", "cores": 2,
                      "stages": [{"stage": "baseline", "status": "ok", "wall_s": 1.0, "cpu_s": 1.0, "passes": [first]}]})  # fmt: skip
    assert "| baseline | encode | minilm (student) | 6 | 6 |" in table and "torch/float32" in table


def test_stage_times_runs_each_stage_after_the_stages_it_reads(tmp_path: Path) -> None:
    """`dvc repro -s` runs no upstream stage: the order follows deps and outs, not the file's order."""
    from bench.stage_times import stage_order

    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  data: {cmd: a, outs: [data]}\n"
        "  baseline: {cmd: b, deps: [data/corpus.jsonl, artifacts/teacher_corpus], outs: [artifacts/baseline]}\n"
        "  teacher_corpus: {cmd: c, deps: [data], outs: [{artifacts/teacher_corpus: {persist: true}}]}\n"
        "  evaluate: {cmd: d, deps: [artifacts/baseline]}\n"
    )  # fmt: skip
    assert stage_order(tmp_path) == ["data", "teacher_corpus", "baseline", "evaluate"]
    (tmp_path / "dvc.yaml").write_text("stages:\n  a: {cmd: a, deps: [y], outs: [x]}\n  b: {cmd: b, deps: [x], outs: [y]}\n")
    with pytest.raises(SystemExit, match="cycle"):
        stage_order(tmp_path)
