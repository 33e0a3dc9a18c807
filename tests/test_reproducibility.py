"""Reproducibility and data versioning, on the real smoke pipeline (`tests.pipeline_fixtures`).

- a second `dvc repro` runs nothing; a loss-weight change invalidates only train -> index -> evaluate
- a killed `teacher` stage leaves its finished chunks and its old output, and resumes
- `git clone` + `dvc pull` from a remote reproduces the artifacts: clean status, same service answers
- the same config and seed give the same metrics and runs (one more full smoke run, in a clone)
- atomic outputs; an edit under conf/ is caught as drift from params.yaml

The smoke run is shared (session fixture); the tests that change state work in copies, or restore
what they touched before returning.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kd.atomic import atomic_dir, atomic_path
from kd.distill.teacher_scores import score_groups
from kd.models.runtime import use_bf16
from tests.pipeline_fixtures import ROOT, SMOKE, copy_repo, env, sh, shared_cache  # smoke_repo etc.: conftest

TOL = 1e-6
BF16_TOL = 3e-3  # bfloat16 keeps ~3 significant digits
RUNNING = re.compile(r"Running stage '([^']+)'")
UP_TO_DATE = "Data and pipelines are up to date."


def stages_of(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def dvc_status(repo: Path, cache: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(sh(["dvc", "status", "--json"], repo, cache).stdout or "{}")
    return out


def ran(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return RUNNING.findall(proc.stdout + proc.stderr)


# ------------------------------------------------------------------ atomic outputs (unit)


def test_atomic_path_keeps_old_file_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        assert target.read_text() == "old"  # the body writes beside the target, never into it
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(tmp_path.iterdir()) == [target]  # the temp sibling is gone

    fresh = tmp_path / "new.parquet"
    with pytest.raises(RuntimeError), atomic_path(fresh) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert not fresh.exists()  # no final file at all
    assert sorted(tmp_path.iterdir()) == [target]

    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(tmp_path.iterdir()) == [target]


def test_atomic_dir_keeps_old_folder_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "student"
    target.mkdir()
    (target / "weights.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_text("partial")
        raise RuntimeError("crash mid-save")
    assert [p.name for p in target.iterdir()] == ["weights.bin"]
    assert (target / "weights.bin").read_text() == "old"
    assert sorted(tmp_path.iterdir()) == [target]  # neither the temp folder nor a `.student.old`

    fresh = tmp_path / "index"
    with pytest.raises(RuntimeError), atomic_dir(fresh) as tmp:
        (tmp / "faiss.index").write_text("partial")
        raise RuntimeError("crash mid-save")
    assert not fresh.exists()
    assert sorted(tmp_path.iterdir()) == [target]

    with atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert [p.name for p in target.iterdir()] == ["model.safetensors"]  # swapped in whole, old files gone
    assert sorted(tmp_path.iterdir()) == [target]


def test_atomic_path_killed_writer_leaves_no_complete_looking_file(tmp_path: Path) -> None:
    """SIGKILL skips every `finally`: what survives must be the old file plus a hidden `.tmp`."""
    target = tmp_path / "teacher_scores.parquet"
    target.write_text("old")
    flag = tmp_path / "writing"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kd.atomic import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_text('partial')\n"
        "    Path(sys.argv[2]).touch()\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(flag)], env=env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.poll() is None, "the writer exited early"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert target.read_text() == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p not in (target, flag)]
    assert len(leftovers) == 1 and leftovers[0].startswith(".teacher_scores.parquet.") and leftovers[0].endswith(".tmp")


# ------------------------------------------------------------------ teacher chunks (unit)


class _LengthTeacher:
    """Deterministic stand-in for `CachedTeacher.score` (no model): a score from the two lengths."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, queries: list[str], passages: list[str], progress: bool = True) -> np.ndarray:
        self.calls += 1
        return np.array([len(q) + len(p) / 100 for q, p in zip(queries, passages)], dtype=np.float32)


def test_score_groups_resume_with_another_chunk_size(tmp_path: Path) -> None:
    """`teacher.chunk_groups` is a param: chunks kept from a killed run with another size must not be spliced in."""
    groups = pd.DataFrame(
        {"qid": [f"q{i}" for i in range(5)], "pos_id": [f"d{i}" for i in range(5)],
         "neg_ids": [[f"d{(i + 1) % 5}", f"d{(i + 2) % 5}"] for i in range(5)]}
    )  # fmt: skip
    queries = {f"q{i}": "q" * (i + 1) for i in range(5)}
    docs = {f"d{i}": "d" * (10 * i + 1) for i in range(5)}
    expected = score_groups(groups, queries, docs, _LengthTeacher(), tmp_path / "ref", "fp", chunk_size=5)

    chunks = tmp_path / "chunks"
    score_groups(groups, queries, docs, _LengthTeacher(), chunks, "fp", chunk_size=2)
    (folder,) = chunks.iterdir()  # one folder per inputs (texts + teacher)
    (folder / "part-2-00002.parquet").unlink()  # as if killed before the last chunk
    resumed = score_groups(groups, queries, docs, _LengthTeacher(), chunks, "fp", chunk_size=3)
    assert resumed["qid"].tolist() == expected["qid"].tolist()
    assert [list(d) for d in resumed["doc_ids"]] == [list(d) for d in expected["doc_ids"]]
    assert np.allclose(np.stack(resumed["scores"]), np.stack(expected["scores"]))

    # same chunk size: the kept chunks are reused, only the missing one is computed
    (folder / "part-3-00001.parquet").unlink()
    teacher = _LengthTeacher()
    again = score_groups(groups, queries, docs, teacher, chunks, "fp", chunk_size=3)
    assert teacher.calls == 1
    assert again["qid"].tolist() == expected["qid"].tolist()


# ------------------------------------------------------------------ conf/ drift


def test_conf_edit_is_detected_as_params_drift(tmp_path: Path) -> None:
    """The check of tests/test_config.py (composition == params.yaml) fails once conf/ is edited."""
    repo = copy_repo(tmp_path / "repo")
    committed = yaml.safe_load((repo / "params.yaml").read_text())

    def composed() -> dict[str, Any]:
        out: dict[str, Any] = yaml.safe_load(sh([sys.executable, "-m", "kd.compose"], repo).stdout)
        return out

    assert composed() == committed  # before the edit the check passes (same comparison as test_config)
    loss_file = repo / "conf" / "loss" / "default.yaml"
    loss = yaml.safe_load(loss_file.read_text())
    loss["margin_mse"] = round(float(loss["margin_mse"]) + 0.1, 6)
    loss_file.write_text(yaml.safe_dump(loss, sort_keys=False))

    drifted = composed()
    assert drifted != committed  # the drift check would fail
    assert drifted["loss"]["margin_mse"] == loss["margin_mse"]
    assert {k: v for k, v in drifted.items() if k != "loss"} == {k: v for k, v in committed.items() if k != "loss"}

    from kd.compose import compose

    assert compose(conf_dir=repo / "conf") == drifted  # in-process composition sees the same edit


# ------------------------------------------------------------------ DVC: nothing to redo, precise invalidation


@pytest.mark.slow
@pytest.mark.pipeline
def test_repro_twice_runs_no_stage(smoke_repo: Path, smoke_cache: Path) -> None:
    lock = (smoke_repo / "dvc.lock").read_bytes()
    for _ in range(2):
        proc = sh(["dvc", "repro"], smoke_repo, smoke_cache)
        assert ran(proc) == [], proc.stdout
        for stage in stages_of(smoke_repo):
            assert f"Stage '{stage}' didn't change, skipping" in proc.stdout
    assert UP_TO_DATE in sh(["dvc", "status"], smoke_repo, smoke_cache).stdout
    assert dvc_status(smoke_repo, smoke_cache) == {}
    assert (smoke_repo / "dvc.lock").read_bytes() == lock


@pytest.mark.slow
@pytest.mark.pipeline
def test_loss_weight_change_invalidates_only_train_index_evaluate(smoke_repo: Path, smoke_cache: Path) -> None:
    params = smoke_repo / "params.yaml"
    original = params.read_bytes()
    raw = yaml.safe_load(original)
    raw["loss"]["margin_mse"] = round(float(raw["loss"]["margin_mse"]) + 0.1, 6)
    try:
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        status = dvc_status(smoke_repo, smoke_cache)
        assert list(status) == ["train"], status  # the only stage whose own deps changed
        assert "loss" in json.dumps(status["train"])
        # downstream stages re-run because train's output will change; --dry alone cannot know
        # that, --force-downstream lists them
        proc = sh(["dvc", "repro", "--dry", "--force-downstream"], smoke_repo, smoke_cache)
        assert ran(proc) == ["train", "index", "evaluate"], proc.stdout
        for stage in ("data", "bm25", "baseline", "negatives", "teacher"):
            assert f"Stage '{stage}' didn't change, skipping" in proc.stdout
    finally:
        params.write_bytes(original)
    assert dvc_status(smoke_repo, smoke_cache) == {}


def _dvcignore_skips_bytecode(repo: Path) -> bool:
    ignore = repo / ".dvcignore"
    lines = ignore.read_text().split() if ignore.exists() else []
    return any(p in lines for p in ("__pycache__", "__pycache__/", "**/__pycache__", "*.pyc", "*.py[cod]"))


@pytest.mark.slow
@pytest.mark.pipeline
def test_bytecode_caches_do_not_invalidate_code_deps(smoke_repo: Path, smoke_cache: Path) -> None:
    """Stages depend on folders of code (`kd/data`); without PYTHONDONTWRITEBYTECODE Python writes
    `__pycache__/` there, and a clone never has it. DVC must not count it as a changed dependency."""
    assert _dvcignore_skips_bytecode(smoke_repo), ".dvcignore must list __pycache__/ and *.pyc"
    before = {p for p in smoke_repo.rglob("__pycache__") if ".dvc" not in p.parts}
    e = env(smoke_cache)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "kd", "stages"], cwd=smoke_repo, env=e, check=True)
        assert (smoke_repo / "kd" / "data" / "__pycache__").is_dir()
        assert dvc_status(smoke_repo, smoke_cache) == {}
    finally:
        for p in smoke_repo.rglob("__pycache__"):
            if ".dvc" not in p.parts and p not in before:
                shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------ teacher: kill and resume

# Each chunk sleeps first, so a chunk takes >= 1.5 s and the kill lands between chunks 2 and 3
# whatever the machine's speed; everything else is the stage as `dvc repro` runs it.
SLOW_TEACHER = """
import runpy, time
import kd.distill.teacher_scores
_score = kd.distill.teacher_scores.score_chunk
def slow(*args, **kwargs):
    time.sleep(1.5)
    return _score(*args, **kwargs)
kd.distill.teacher_scores.score_chunk = slow
runpy.run_module("stages.teacher", run_name="__main__", alter_sys=True)
"""


def _stage_workdir(repo: Path, dest: Path) -> Path:
    """What `python -m stages.teacher` reads and writes: code, params, data, negatives, the teacher's
    passage matrix, its old output."""
    for name in ("kd", "stages", "data", "artifacts/teacher_corpus"):
        shutil.copytree(repo / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(repo / "params.yaml", dest / "params.yaml")
    for name in ("negatives.parquet", "teacher_scores.parquet"):
        shutil.copy2(repo / "artifacts" / name, dest / "artifacts" / name)
    return dest


@pytest.mark.slow
@pytest.mark.pipeline
def test_killed_teacher_resumes_from_its_chunks(smoke_repo: Path, tmp_path: Path) -> None:
    work = _stage_workdir(smoke_repo, tmp_path / "work")
    cache = tmp_path / "cold-cache"  # no teacher vectors, no chunks: everything is computed
    out = work / "artifacts" / "teacher_scores.parquet"
    old_bytes, old_mtime = out.read_bytes(), out.stat().st_mtime_ns
    chunk_groups = yaml.safe_load((work / "params.yaml").read_text())["teacher"]["chunk_groups"]
    n_chunks = math.ceil(len(pd.read_parquet(work / "artifacts" / "negatives.parquet")) / chunk_groups)
    assert n_chunks >= 4, "the smoke config should give the teacher several chunks"

    def parts() -> list[Path]:
        return sorted(cache.glob("teacher_chunks/*/part-*.parquet"))

    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_TEACHER],
        cwd=work,
        env=env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while len(parts()) < 2:
            if proc.poll() is not None:
                pytest.fail(f"teacher stage exited ({proc.returncode}) before 2 chunks: {proc.stderr.read()[-2000:]!r}")
            assert time.monotonic() < deadline, "no 2 teacher chunks within 5 minutes"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    kept = parts()
    assert 2 <= len(kept) < n_chunks, f"killed after {len(kept)} of {n_chunks} chunks"
    kept_mtimes = {p.name: p.stat().st_mtime_ns for p in kept}
    for p in kept:  # every chunk that has its final name is complete
        assert len(pd.read_parquet(p)) == chunk_groups
    # the old output is untouched, and nothing that looks like a finished output appeared
    assert out.read_bytes() == old_bytes and out.stat().st_mtime_ns == old_mtime
    assert sorted(p.name for p in (work / "artifacts").iterdir()) == [
        "negatives.parquet", "teacher_corpus", "teacher_scores.parquet"
    ]  # fmt: skip

    sh([sys.executable, "-m", "stages.teacher"], work, cache)
    done = parts()
    assert len(done) == n_chunks
    assert {p.name: p.stat().st_mtime_ns for p in done if p.name in kept_mtimes} == kept_mtimes  # not recomputed

    resumed = pd.read_parquet(out)
    reference = pd.read_parquet(smoke_repo / "artifacts" / "teacher_scores.parquet")  # the uninterrupted run
    assert resumed["qid"].tolist() == reference["qid"].tolist()
    assert [list(d) for d in resumed["doc_ids"]] == [list(d) for d in reference["doc_ids"]]
    # other batch compositions (cold cache, chunked) pad differently: that changes the last float32
    # bits, or, under bfloat16 autocast (teacher.dtype auto on a bf16 CPU), the third decimal
    teacher_dtype = yaml.safe_load((work / "params.yaml").read_text())["teacher"]["dtype"]
    tol = BF16_TOL if use_bf16(teacher_dtype) else TOL
    diff = np.abs(np.concatenate(resumed["scores"].tolist()) - np.concatenate(reference["scores"].tolist()))
    assert diff.max() <= tol, f"max |score diff| {diff.max():.3g}"


# ------------------------------------------------------------------ remote round trip


def _service_answers(repo: Path, queries: list[str]) -> dict[str, Any]:
    from litestar.testing import TestClient

    from kd.params import load_params
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(repo / "artifacts" / "student", repo / "artifacts" / "index", load_params(repo / "params.yaml"))
    answers: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        for name, body in {
            "student": {"queries": queries, "k": 10, "rerank": False},
            "rerank": {"queries": queries, "k": 5, "rerank": True, "rerank_depth": 10},
        }.items():
            resp = client.post("/search/batch", json=body)
            assert resp.status_code == 200, resp.text
            answers[name] = [[(h["doc_id"], h["score"]) for h in item["results"]] for item in resp.json()["results"]]
        ready = client.get("/ready").json()
        answers["corpus_size"] = ready["corpus_size"]
        answers["index"] = ready["index"]
        answers["student_info"] = ready["student"]
    return answers


@pytest.mark.slow
@pytest.mark.pipeline
def test_push_clone_pull_same_answers(smoke_repo: Path, smoke_cache: Path, tmp_path: Path) -> None:
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    # a full copy (git history, DVC cache), so committing and adding a remote leave smoke_repo alone
    shutil.copytree(
        smoke_repo, origin, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else []
    )
    sh(["dvc", "remote", "add", "-d", "localremote", str(remote)], origin, smoke_cache)
    sh(["git", "add", "-A"], origin)
    sh(["git", "commit", "-qm", "smoke pipeline state"], origin)
    assert sh(["git", "status", "--porcelain"], origin).stdout == ""  # all the rest is DVC's (git-ignored)
    tracked = sh(["git", "ls-files"], origin).stdout.split()
    assert {"dvc.lock", "params.yaml", "metrics.json", "artifacts/train/metrics.json"} <= set(tracked)
    assert not any(t.startswith(("data/", "artifacts/student/", "artifacts/index/")) for t in tracked)
    sh(["dvc", "push"], origin, smoke_cache)

    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "artifacts" / "index").exists()
    sh(["dvc", "pull"], clone, smoke_cache)
    assert UP_TO_DATE in sh(["dvc", "status"], clone, smoke_cache).stdout
    assert dvc_status(clone, smoke_cache) == {}
    assert ran(sh(["dvc", "repro", "--dry"], clone, smoke_cache)) == []
    for rel in ("artifacts/index/faiss.index", "artifacts/teacher_scores.parquet", "data/corpus.jsonl"):
        if (smoke_repo / rel).exists():
            assert (clone / rel).read_bytes() == (smoke_repo / rel).read_bytes(), rel

    from kd.data.io import read_dataset

    test_queries = read_dataset(smoke_repo / "data").queries["test"]
    queries = [test_queries[q] for q in sorted(test_queries)[:3]] + ["How do I read a file line by line?"]
    original, pulled = _service_answers(smoke_repo, queries), _service_answers(clone, queries)
    assert pulled["corpus_size"] == original["corpus_size"] and pulled["index"] == original["index"]
    assert pulled["student_info"] == original["student_info"]
    for mode in ("student", "rerank"):
        for got, want in zip(pulled[mode], original[mode], strict=True):
            assert [d for d, _ in got] == [d for d, _ in want], mode
            assert np.allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=TOL), mode


# ------------------------------------------------------------------ same config + seed -> same numbers


def _numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _numbers(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _numbers(val, f"{prefix}{i}.").items()}
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return {}
    return {prefix.rstrip("."): float(obj)}


def _close(a: float, b: float, tol: float = TOL) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


TIMINGS = "query_encode_ms."  # metrics.json's encode latencies: measured, so they differ run to run


def _assert_json_close(a: Path, b: Path) -> None:
    x, y = _numbers(json.loads(a.read_text())), _numbers(json.loads(b.read_text()))
    x, y = ({k: v for k, v in d.items() if not k.startswith(TIMINGS)} for d in (x, y))
    assert x.keys() == y.keys(), a.name
    bad = {k: (x[k], y[k]) for k in x if not _close(x[k], y[k])}
    assert not bad, f"{a}: {bad}"


def _assert_csv_close(a: Path, b: Path) -> None:
    ra, rb = list(csv.reader(a.open())), list(csv.reader(b.open()))
    assert len(ra) == len(rb) and ra[0] == rb[0], a.name
    for la, lb in zip(ra[1:], rb[1:]):
        for ca, cb in zip(la, lb, strict=True):
            try:
                fa, fb = float(ca), float(cb)
            except ValueError:
                assert ca == cb, a.name
                continue
            # csv values may be rounded (table.csv: 4 places); allow one unit of the last place
            places = len(ca.partition(".")[2]) if "." in ca and "e" not in ca.lower() else 16
            assert _close(fa, fb, max(TOL, 10.0**-places)), f"{a}: {ca} vs {cb}"


def _trec(path: Path) -> list[tuple[str, str, int, float]]:
    rows = []
    for line in path.read_text().splitlines():
        qid, _, doc, rank, score, _ = line.split()
        rows.append((qid, doc, int(rank), float(score)))
    return rows


@pytest.mark.slow
@pytest.mark.pipeline
def test_same_config_and_seed_give_same_numbers(smoke_repo: Path, smoke_cache: Path, tmp_path: Path) -> None:
    """A second `dvc exp run -S +experiment=smoke` from the same commit, in a clone with its own DVC
    cache (no run-cache hits) and its own, empty KD_CACHE_DIR: every teacher vector, teacher chunk
    and ONNX export is computed again rather than replayed from the first run's cache."""
    again = tmp_path / "again"
    sh(["git", "clone", "-q", str(smoke_repo), str(again)], tmp_path)  # the code the smoke run used
    cold = shared_cache(tmp_path)  # only the Debian doc package, so nothing is downloaded again
    assert sorted(p.name for p in cold.iterdir()) in ([], ["debian"])
    sh(["dvc", "exp", "run", *SMOKE], again, cold)
    assert list(cold.glob("teacher_chunks/*/part-*.parquet")), "the teacher stage did not score into the cold cache"

    for rel in ("metrics.json", "artifacts/train/metrics.json"):
        _assert_json_close(smoke_repo / rel, again / rel)
    for rel in ("artifacts/train/loss.csv", "artifacts/train/dev.csv", "artifacts/eval/table.csv"):
        _assert_csv_close(smoke_repo / rel, again / rel)

    runs = sorted(str(p.relative_to(smoke_repo / "artifacts" / "runs")) for p in (smoke_repo / "artifacts" / "runs").glob("*/*.trec"))
    assert runs and runs == sorted(str(p.relative_to(again / "artifacts" / "runs")) for p in (again / "artifacts" / "runs").glob("*/*.trec"))
    for name in runs:
        want, got = _trec(smoke_repo / "artifacts" / "runs" / name), _trec(again / "artifacts" / "runs" / name)
        assert [r[:3] for r in got] == [r[:3] for r in want], name  # same docs, same ranks
        # scores are printed with 6 decimals: one unit of rounding on top of TOL
        assert all(abs(g[3] - w[3]) <= TOL + 1e-6 + 1e-12 for g, w in zip(got, want)), name

    # Byte for byte: every DVC output up to the teacher, and the outputs that carry numbers. Not
    # byte-identical by design, so compared by content: artifacts/bm25/index (Lucene writes segment
    # ids and timestamps), artifacts/student/README.md (the model card states the training time),
    # artifacts/index/meta.json (provenance: the DVC experiment name).
    def out_hashes(repo: Path) -> dict[str, str]:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", [])}

    want_h, got_h = out_hashes(smoke_repo), out_hashes(again)
    for path in ("data", "artifacts/baseline", "artifacts/negatives.parquet", "artifacts/teacher_scores.parquet"):
        assert got_h[path] == want_h[path], path
    for rel in ("artifacts/bm25/runs", "artifacts/index/docids.json", "artifacts/index/passages.jsonl"):
        for f in sorted((smoke_repo / rel).rglob("*")) if (smoke_repo / rel).is_dir() else [smoke_repo / rel]:
            if f.is_file():
                assert (again / f.relative_to(smoke_repo)).read_bytes() == f.read_bytes(), f
    provenance = {"git_commit", "dvc_experiment"}
    meta_a, meta_b = (json.loads((r / "artifacts/index/meta.json").read_text()) for r in (smoke_repo, again))
    assert {k: v for k, v in meta_a.items() if k not in provenance} == {
        k: v for k, v in meta_b.items() if k not in provenance
    }

    from safetensors.numpy import load_file

    weights = sorted(p.relative_to(smoke_repo) for p in (smoke_repo / "artifacts/student").rglob("*.safetensors"))
    assert weights
    for rel in weights:
        a, b = load_file(str(smoke_repo / rel)), load_file(str(again / rel))
        assert a.keys() == b.keys()
        worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a if a[k].size)
        assert worst <= TOL, f"{rel}: max |weight diff| {worst:.3g}"
