"""kd.compute: local vs Ray Data actors give the same numbers; shards resume; bad clusters fail clearly.

One local Ray session (2 CPUs) serves the whole module: starting Ray is the slow part.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd import compute
from kd.compute import ComputeError, ModelSpec, PairScorer, ShardRunner, encode_texts, score_pairs
from kd.config import ComputeConfig, ModelConfig
from kd.errors import ArtifactError, ConfigError
from kd.params import params_from_dict

ray = pytest.importorskip("ray", reason='compute=ray needs `pip install -e ".[ray]"`')

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # one local Ray for the whole module

LOCAL = ComputeConfig(backend="local", batch_size=8)
RAY = ComputeConfig(backend="ray", actors=2, cpus_per_actor=1, num_cpus=2, batch_size=8, max_retries=2)
TEXTS = [f"passage {i}: how do I " + "copy a file in python " * (i % 7) for i in range(50)]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray for the module (kd.compute.init_ray reuses an initialised session)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class FakeRunner(ShardRunner):
    """No model: a vector from each text's length and first letters, so runs are instant and checkable."""

    def __init__(self, spec: ModelSpec, op: str, threads: int | None = None) -> None:
        self.spec, self.op = spec, op
        self.marker = Path(spec.model_dir or ".")

    def run(self, payload: list) -> np.ndarray:
        return np.asarray([[len(t), ord(t[0]), ord(t[-1])] for t in payload], dtype=np.float32)


def fake(texts: list[str]) -> np.ndarray:
    return FakeRunner(ModelSpec.student(ModelConfig()), "encode").run(texts)


class CrashOnce(FakeRunner):
    """Kills its worker process the first time it sees the text 'crash' (a marker file remembers)."""

    def run(self, payload: list) -> np.ndarray:
        flag = self.marker / "crashed"
        if "crash" in payload and not flag.exists():
            flag.write_text("1")
            os._exit(1)
        return super().run(payload)


class CrashAlways(FakeRunner):
    def run(self, payload: list) -> np.ndarray:
        if "crash" in payload:
            os._exit(1)
        return super().run(payload)


def test_local_equals_ray_with_minilm():
    spec = ModelSpec.student(ModelConfig())
    local = encode_texts(TEXTS, spec, LOCAL)
    on_ray = encode_texts(TEXTS, spec, RAY)
    assert local.shape == on_ray.shape == (50, 384) and local.dtype == on_ray.dtype == np.float32
    np.testing.assert_allclose(on_ray, local, atol=1e-5)
    from kd.models.loading import encode, load_bi_encoder

    whole = encode(load_bi_encoder("minilm"), TEXTS)  # one call, no shards: the rows line up with the inputs
    np.testing.assert_allclose(local, whole, atol=1e-5)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A small cross-encoder saved once (MiniLM body + a fresh head), so both paths load the same weights."""
    from sentence_transformers import CrossEncoder

    from kd.models.store import minilm_path

    out = tmp_path_factory.mktemp("ce")
    CrossEncoder(str(minilm_path()), num_labels=1, device="cpu").save(str(out))
    return out


def test_score_pairs_cross_encoder_local_equals_ray(cross_encoder_dir, tmp_path):
    cfg = ModelConfig(name="ce", model=str(cross_encoder_dir), kind="cross_encoder", max_seq_length=64, batch_size=8)
    spec = ModelSpec.teacher(cfg)
    qs = [f"question {i}?" for i in range(20)]
    ps = TEXTS[:20]
    local = score_pairs(qs, ps, spec, LOCAL, tmp_path / "local")
    on_ray = score_pairs(qs, ps, spec, RAY, tmp_path / "ray")
    assert local.shape == (20,)
    np.testing.assert_allclose(on_ray, local, atol=1e-4)
    from kd.models.teacher import load_teacher

    np.testing.assert_allclose(local, load_teacher(cfg).score(qs, ps), atol=1e-4)


def test_cross_encoder_groups_scored_on_ray_equal_local(cross_encoder_dir, tmp_path):
    """Stage `teacher` under compute=ray: score_groups with the Ray pair scorer == the in-process teacher."""
    import pandas as pd

    from kd.distill.teacher_scores import score_groups
    from kd.models.teacher import load_teacher
    from kd.models.teacher_cache import CachedTeacher

    cfg = ModelConfig(name="ce", model=str(cross_encoder_dir), kind="cross_encoder", max_seq_length=64, batch_size=8)
    groups = pd.DataFrame({"qid": ["q0", "q1", "q2"], "pos_id": ["d0", "d3", "d6"],
                           "neg_ids": [["d1", "d2"], ["d4", "d5"], ["d7", "d8"]]})  # fmt: skip
    queries = {f"q{i}": f"question {i}?" for i in range(3)}
    docs = {f"d{i}": TEXTS[i] for i in range(9)}
    local = score_groups(groups, queries, docs, CachedTeacher(load_teacher(cfg), tmp_path / "c"), tmp_path / "a", "fp", 2)
    on_ray = score_groups(groups, queries, docs, PairScorer(ModelSpec.teacher(cfg), RAY), tmp_path / "b", "fp", 2)
    assert [list(d) for d in on_ray["doc_ids"]] == [list(d) for d in local["doc_ids"]]
    np.testing.assert_allclose(np.vstack(on_ray["scores"]), np.vstack(local["scores"]), atol=1e-4)


def test_bi_encoder_pair_scores_are_cosines():
    spec = ModelSpec.teacher(ModelConfig(name="m", model="minilm"))
    scores = score_pairs(TEXTS[:5], TEXTS[5:10], spec, LOCAL)
    emb = encode_texts(TEXTS[:10], spec, LOCAL)
    np.testing.assert_allclose(scores, np.einsum("ij,ij->i", emb[:5], emb[5:10]), atol=1e-5)


def _run(texts, cfg, chunk_dir, runner=FakeRunner, marker: Path | None = None):
    spec = ModelSpec(ModelConfig(), "student", None if marker is None else str(marker))
    return compute.run_sharded(texts, [len(t) for t in texts], spec, "encode", cfg, chunk_dir, np.float32, runner)


def test_shards_resume_and_half_written_files_are_not_taken(tmp_path):
    chunks = tmp_path / "chunks"
    first = _run(TEXTS, LOCAL, chunks)
    np.testing.assert_array_equal(first, fake(TEXTS))
    parts = sorted(chunks.glob("part-*.npy"))
    assert len(parts) == 7  # 50 texts / 8 per shard
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # a shard never written
    parts[4].write_bytes(parts[4].read_bytes()[:40])  # a torn file (not written through atomic_path)
    (chunks / ".part-00005.npy.abc.tmp").write_bytes(b"half")  # a temp file a kill left behind

    calls: list[int] = []

    class Counting(FakeRunner):
        def run(self, payload: list) -> np.ndarray:
            calls.append(len(payload))
            return super().run(payload)

    again = _run(TEXTS, LOCAL, chunks, Counting)
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 2  # only the missing and the torn shard
    assert {p.name for p in chunks.glob("part-*.npy") if p.stat().st_mtime_ns == stamps[p.name]} == {
        p.name for p in parts if p not in (parts[2], parts[4])
    }


def test_changed_inputs_drop_old_shards(tmp_path):
    chunks = tmp_path / "chunks"
    _run(TEXTS, LOCAL, chunks)
    changed = [t + "!" for t in TEXTS]
    np.testing.assert_array_equal(_run(changed, LOCAL, chunks), fake(changed))
    bigger = ComputeConfig(backend="local", batch_size=16)  # another shard size: old shards do not line up
    np.testing.assert_array_equal(_run(changed, bigger, chunks), fake(changed))
    assert len(list(chunks.glob("part-*.npy"))) == 4


def test_foreign_part_files_are_never_deleted(tmp_path):
    (tmp_path / "part-00000.npy").write_bytes(b"someone else's chunk")
    with pytest.raises(ArtifactError, match="did not write"):
        _run(TEXTS, LOCAL, tmp_path)
    assert (tmp_path / "part-00000.npy").read_bytes() == b"someone else's chunk"


def test_ray_resumes_local_shards(tmp_path):
    chunks = tmp_path / "chunks"
    _run(TEXTS, LOCAL, chunks)
    (chunks / "part-00001.npy").unlink()
    np.testing.assert_array_equal(_run(TEXTS, RAY, chunks), fake(TEXTS))
    assert (chunks / "part-00001.npy").exists()


def test_ray_restarts_a_dead_worker(tmp_path):
    texts = [*TEXTS[:20], "crash"]
    out = _run(texts, RAY, tmp_path / "chunks", CrashOnce, marker=tmp_path)
    assert (tmp_path / "crashed").exists()  # the worker did die once
    np.testing.assert_array_equal(out, fake(texts))


def test_ray_worker_that_keeps_dying_is_a_clear_error_and_keeps_finished_shards(tmp_path):
    texts = [*TEXTS[:20], "crash"]  # 'crash' is the shortest text: shard 0
    chunks = tmp_path / "chunks"
    cfg = ComputeConfig(backend="ray", actors=2, num_cpus=2, batch_size=4, max_retries=1)
    with pytest.raises(ComputeError, match=r"compute.max_retries=1 .*shards are kept in .*re-run to resume"):
        _run(texts, cfg, chunks, CrashAlways, marker=tmp_path)
    kept = sorted(chunks.glob("part-*.npy"))
    assert "part-00000.npy" not in {p.name for p in kept}
    for p in kept:  # whatever finished is complete and loadable
        assert np.load(p).shape[1] == 3
    np.testing.assert_array_equal(_run(texts, ComputeConfig(backend="local", batch_size=4), chunks), fake(texts))


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_unreachable_address(address):
    cfg = ComputeConfig(backend="ray", address=address)
    with pytest.raises(ComputeError, match=rf"compute.address='{address}' is unreachable.*ray start --head"):
        encode_texts(["x"], ModelSpec.student(ModelConfig()), cfg)


def test_bad_address_form():
    with pytest.raises(ComputeError, match="fix compute.address"):
        compute.init_ray(ComputeConfig(backend="ray", address="nonsense"))


def test_gpu_the_cluster_lacks():
    cfg = ComputeConfig(backend="ray", gpus_per_actor=1, batch_size=4)
    with pytest.raises(ComputeError, match=r"compute.gpus_per_actor=1(\.0)? but .* has 0 GPUs.*gpus_per_actor=0"):
        _run(TEXTS[:4], cfg, None)


def test_plan_actors():
    cfg = ComputeConfig(backend="ray", actors=4, cpus_per_actor=1)
    assert compute.plan_actors(cfg, {"CPU": 2.0}) == 2  # clamped to what fits, with a warning
    assert compute.plan_actors(ComputeConfig(backend="ray", actors=2, gpus_per_actor=0.5), {"CPU": 8, "GPU": 1}) == 2
    with pytest.raises(ComputeError, match="compute.cpus_per_actor=4"):
        compute.plan_actors(ComputeConfig(backend="ray", cpus_per_actor=4), {"CPU": 2.0})


@pytest.mark.parametrize(
    ("change", "key"), [({"backend": "dask"}, "compute.backend"), ({"actors": 0}, "compute.actors"),
                        ({"batch_size": 0}, "compute.batch_size")],
)  # fmt: skip
def test_bad_compute_config(change, key):
    import dataclasses

    with pytest.raises(ConfigError, match=key):
        compute.check(dataclasses.replace(LOCAL, **change))


def test_compute_group_composes():
    from kd.compose import compose

    assert params_from_dict(compose()).compute.backend == "local"
    on_ray = params_from_dict(compose(["compute=ray"])).compute
    assert on_ray.backend == "ray" and on_ray.address == "local" and on_ray.actors == 2


def test_local_path_never_imports_ray():
    code = (
        "import sys; from kd import compute; from kd.config import ComputeConfig, ModelConfig;"
        "compute.check(ComputeConfig()); import stages.index, stages.baseline;"
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_index_stage_on_ray_matches_local(tmp_path, monkeypatch):
    """Stage `index` (IVF-PQ) under compute=local and compute=ray: same vectors, an index the service loads."""
    import dataclasses
    import shutil

    import faiss

    from kd.config import IndexConfig, Params
    from kd.data.io import SPLITS, Dataset, write_dataset
    from kd.models.store import minilm_path
    from kd.retrieval import index as kdindex
    from stages import index as index_stage

    corpus = {f"d{i:02d}": {"title": f"t{i}", "text": t} for i, t in enumerate(TEXTS[:30])}
    queries = {s: {f"{s}{i}": f"question {i} about copying?" for i in range(2)} for s in SPLITS}
    qrels = {s: {q: {f"d{i:02d}": 1} for i, q in enumerate(qs)} for s, qs in queries.items()}
    write_dataset(Dataset(corpus, queries, qrels, {"source": "test"}), tmp_path / "data")
    shutil.copytree(minilm_path(), tmp_path / "artifacts" / "student")
    monkeypatch.chdir(tmp_path)  # the stage's relative paths (artifacts/student) must reach the Ray actors too
    ivf = IndexConfig(type="ivfpq", nlist=4, m=48, nbits=4, nprobe=2, train_size=1000)
    vectors = {}
    for cfg in (LOCAL, RAY):
        monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / f"cache-{cfg.backend}"))
        index_stage.main(dataclasses.replace(Params(), index=ivf, compute=cfg))
        loaded = kdindex.load(tmp_path / "artifacts" / "index")  # what the service calls
        assert isinstance(loaded.index, faiss.IndexIVFPQ) and loaded.index.nprobe == 2
        assert loaded.meta["compute"] == cfg.backend and loaded.index.ntotal == 30
        parts = sorted((tmp_path / f"cache-{cfg.backend}" / "encode" / "index").rglob("part-*.npy"))
        assert len(parts) == 4  # 30 passages in shards of 8
        vectors[cfg.backend] = np.concatenate([np.load(p) for p in parts])
    np.testing.assert_allclose(vectors["ray"], vectors["local"], atol=1e-5)
