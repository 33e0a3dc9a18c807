"""kd.artifacts names the same outputs dvc.yaml declares: a path renamed in one place fails here."""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from kd import artifacts
from tests.conftest import ROOT

STAGE_DIRS = [artifacts.BM25, artifacts.BASELINE, artifacts.TEACHER_CORPUS, artifacts.NEGATIVES, artifacts.TEACHER_SCORES,
              artifacts.STUDENT, artifacts.TRAIN, artifacts.INDEX, artifacts.RUNS, artifacts.EVAL]  # fmt: skip


def declared_outputs() -> list[PurePosixPath]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            outs += [PurePosixPath(o if isinstance(o, str) else next(iter(o))) for o in stage.get(kind, [])]
    return [o for o in outs if o.parts[0] == artifacts.ROOT.name]


def test_every_named_path_is_a_declared_output_and_back():
    outs = declared_outputs()
    names = [PurePosixPath(p.as_posix()) for p in STAGE_DIRS]
    for name in names:  # each name is an output, or the folder of some
        assert any(o == name or name in o.parents for o in outs), f"{name} is not an output in dvc.yaml"
    for out in outs:  # each output is named (or lies in a named folder)
        assert any(out == n or n in out.parents for n in names), f"dvc.yaml output {out} has no name in kd/artifacts.py"
    assert artifacts.bm25_run("dev").is_relative_to(artifacts.BM25)
    assert artifacts.baseline_run("test").is_relative_to(artifacts.BASELINE)


def test_require_names_the_stage_that_writes_a_missing_output(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from kd.errors import DataError

    with pytest.raises(DataError, match=r"negatives.parquet not found: run `dvc repro negatives` first"):
        artifacts.require(tmp_path / "negatives.parquet", "negatives")
    (tmp_path / "negatives.parquet").write_bytes(b"")
    assert artifacts.require(tmp_path / "negatives.parquet", "negatives") == tmp_path / "negatives.parquet"
