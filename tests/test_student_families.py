"""Cheaper student families (cut checkpoints, static tables) and the asymmetric serving mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kd.config import IndexConfig, ModelConfig, Params
from kd.distill.objective import DistillLoss, training_rows
from kd.errors import ArtifactError, ConfigError
from kd.models import teacher_corpus
from kd.models.loading import load_bi_encoder
from kd.models.student_families import cut_layers, initial_student
from kd.params import params_from_dict
from kd.retrieval import index

STATIC = {"kind": "static", "model": "minilm", "backend": "torch", "corpus_backend": "torch"}


@pytest.mark.parametrize(
    ("layers", "says"),
    [([], "keeps no layer"), ([0, -1], "negative"), ([0, 2, 2], "repeats"), ([3, 1], "out of order")],
)
def test_bad_layers_are_named(layers, says):
    with pytest.raises(ConfigError, match=rf"student\.layers.*{says}"):
        params_from_dict({"student": {"layers": layers}})


def test_layers_beyond_the_checkpoint_are_named():
    model = load_bi_encoder("minilm")
    with pytest.raises(ConfigError, match=r"student\.layers=\[0, 6\].*has 6 \(0-5\)"):
        cut_layers(model, [0, 6])


def test_cut_checkpoint_is_an_ordinary_smaller_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    path = Path(initial_student(ModelConfig(model="minilm", layers=[0, 2, 5])))
    assert path.name.startswith("cut-minilm-L0_2_5-")
    plain = SentenceTransformer(str(path), device="cpu")  # no project code needed to load it
    hf = plain[0].auto_model
    assert hf.config.num_hidden_layers == 3 and len(hf.encoder.layer) == 3
    full = load_bi_encoder("minilm")
    # the kept blocks are the source's blocks 0, 2 and 5, weight for weight
    for kept, src in zip(hf.encoder.layer, [0, 2, 5], strict=True):
        a = kept.attention.self.query.weight
        b = full[0].auto_model.encoder.layer[src].attention.self.query.weight
        assert torch.equal(a, b)
    cut, whole = plain.encode(["open a file"], normalize_embeddings=True), full.encode(["open a file"], normalize_embeddings=True)
    assert cut.shape == whole.shape and float(cut[0] @ whole[0]) < 0.9999  # same space, other numbers


def test_static_student_is_the_teachers_vocabulary_mean_pooled():
    from sentence_transformers import SentenceTransformer

    path = Path(initial_student(ModelConfig(name="static", **STATIC)))
    assert path.name.startswith("static-minilm-full-")
    model = SentenceTransformer(str(path), device="cpu")  # an ordinary sentence-transformers folder
    table = model[0].embedding.weight.detach().numpy()
    assert table.shape[1] == 384  # dim null keeps the source's width (and space)
    ids = model[0].tokenizer.encode("open a file", add_special_tokens=False).ids
    want = table[ids].mean(axis=0)
    got = model.encode(["open a file"], convert_to_numpy=True)[0]
    assert np.allclose(got, want, atol=1e-5)
    # the same path again does not rebuild: the folder is reused
    assert initial_student(ModelConfig(name="static", **STATIC)) == str(path)


def asym(**student) -> dict:
    return {"index": {"passages": "teacher"}, "student": {"model": "mpnet", **student}}


def test_asymmetric_needs_a_student_in_the_teachers_space():
    with pytest.raises(ConfigError, match=r"index\.passages=teacher: student\.model='minilm' is not in the space"):
        params_from_dict({"index": {"passages": "teacher"}})  # the default student is MiniLM, the teacher mpnet
    with pytest.raises(ConfigError, match=r"student\.dim=256"):
        params_from_dict(asym(**{**STATIC, "model": "mpnet", "dim": 256}))
    with pytest.raises(ConfigError, match=r"index\.passages=.*cross-encoder"):
        params_from_dict({**asym(), "teacher": {"kind": "cross_encoder", "model": "mpnet"}})
    with pytest.raises(ConfigError, match=r"index\.passages='both' is unknown"):
        params_from_dict({"index": {"passages": "both"}})
    ok = params_from_dict(asym(layers=[0, 4, 8, 11]))
    assert ok.index.passages == "teacher" and ok.student.layers == [0, 4, 8, 11]
    assert params_from_dict(asym(**{**STATIC, "model": "mpnet"})).student.kind == "static"


def test_static_family_keys_are_checked():
    with pytest.raises(ConfigError, match=r"student\.kind='lookup' is unknown"):
        params_from_dict({"student": {"kind": "lookup"}})
    with pytest.raises(ConfigError, match="static student .* set both to torch"):
        params_from_dict({"student": {**STATIC, "backend": "onnx"}})
    with pytest.raises(ConfigError, match=r"student\.dim=64 applies to static students only"):
        params_from_dict({"student": {"dim": 64}})
    with pytest.raises(ConfigError, match=r"student\.layers applies to transformer students"):
        params_from_dict({"student": {**STATIC, "layers": [0]}})


def write_view(tmp_path: Path, docids: list[str], texts: list[str], teacher: ModelConfig, dim: int) -> Path:
    from kd.models.teacher import model_key

    emb = np.random.default_rng(0).normal(size=(len(docids), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    key = model_key(teacher)
    out = tmp_path / "teacher_corpus"
    teacher_corpus.write(out, docids, emb, {"model": teacher.model, "kind": "bi_encoder", "model_key": key,
                                            "fingerprint": teacher_corpus.fingerprint(docids, texts, key)})  # fmt: skip
    return out


def test_teacher_matrix_is_refused_for_another_width_or_corpus(tmp_path):
    teacher = ModelConfig(name="t", model="minilm", max_seq_length=64)
    docids, texts = ["a", "b", "c"], ["alpha text", "beta text", "gamma text"]
    out = write_view(tmp_path, docids, texts, teacher, 384)
    vectors = index.teacher_passages(out, teacher, docids, texts, 384)
    assert vectors.shape == (3, 384)
    with pytest.raises(ConfigError, match=r"index\.passages=teacher: the student embeds in 256 dimensions"):
        index.teacher_passages(out, teacher, docids, texts, 256)
    with pytest.raises(ArtifactError, match="fingerprint .*dvc repro teacher_corpus"):
        index.teacher_passages(out, teacher, docids, ["alpha text", "beta text", "edited"], 384)
    with pytest.raises(ArtifactError, match="fingerprint"):  # the same corpus from another teacher setting
        index.teacher_passages(out, replace(teacher, max_seq_length=128), docids, texts, 384)


def test_passage_vectors_follow_index_passages(tmp_path):
    """Symmetric: the student's own pass (kept shards, so a rerun reads them); asymmetric: the teacher's rows."""
    from kd import compute
    from kd.params import params_from_dict

    p = params_from_dict({"teacher": {"model": "minilm", "max_seq_length": 64}, "student": {"corpus_backend": "torch"}})
    docids, texts = ["a", "b", "c"], ["alpha text", "beta text", "gamma text"]
    out = write_view(tmp_path, docids, texts, p.teacher, 384)
    spec = compute.ModelSpec.student(p.student)
    own = index.passage_vectors(p, spec, out, docids, texts, tmp_path / "shards")
    (shards,) = (tmp_path / "shards").iterdir()
    assert own.shape == (3, 384) and any(shards.iterdir())
    assert np.allclose(own, index.passage_vectors(p, spec, out, docids, texts, tmp_path / "shards"))
    asym = replace(p, index=replace(p.index, passages="teacher"))
    teachers = index.passage_vectors(asym, spec, out, docids, texts, tmp_path / "unused")
    assert np.allclose(teachers, index.teacher_passages(out, p.teacher, docids, texts, 384))
    assert not np.allclose(teachers, own) and not (tmp_path / "unused").exists()  # no student corpus pass


class Bag(nn.Module):
    """A stand-in encoder: a learnable vector per token id, summed (what a static student is)."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.table = nn.Embedding(10, dim)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sentence_embedding": self.table(features["input_ids"]).sum(dim=1)}


def test_asymmetric_training_encodes_queries_only():
    import pandas as pd

    t_q = {"q1": np.array([1.0, 0.0, 0.0, 0.0], np.float32)}
    rows_t = {"d1": [0.0, 1.0, 0.0, 0.0], "d2": [0.0, 0.0, 1.0, 0.0]}
    scores = pd.DataFrame({"qid": ["q1"], "doc_ids": [["d1", "d2"]], "scores": [[0.9, 0.1]]})
    cols = training_rows(scores, {"q1": "a query"}, {"d1": "x", "d2": "y"}, ModelConfig(), t_q,
                         lambda ids: np.array([rows_t[d] for d in ids], np.float32), passages_from_teacher=True)  # fmt: skip
    assert set(cols) == {"query", "label"}  # no passage text: the teacher's rows stand for the passages
    assert len(cols["label"][0]) == 2 + 4 * 3  # two scores, the teacher's query row, two passage rows
    model = Bag()
    weights = Params().loss
    loss = DistillLoss(model, replace(weights, embed=1.0), teacher_passages=2)
    labels = torch.tensor(cols["label"])
    value = loss([{"input_ids": torch.tensor([[1, 2]])}], labels)
    value.backward()
    grad = model.table.weight.grad
    assert grad is not None and grad[[1, 2]].abs().sum() > 0  # the query's tokens learn
    assert grad[[0, 3, 4]].abs().sum() == 0  # nothing else was encoded
    assert {"margin_mse", "listwise_kl", "in_batch", "embed"} <= set(loss.drain())
    with pytest.raises(ValueError, match="teacher embeddings"):
        DistillLoss(model, weights, teacher_passages=2)([{"input_ids": torch.tensor([[1]])}], labels[:, :2])


def test_index_config_default_is_symmetric():
    assert IndexConfig().passages == "student"


# ---------------------------------------------------------------- the pipeline, asymmetric, for real


@pytest.mark.slow
@pytest.mark.pipeline
def test_asymmetric_static_pipeline_end_to_end(tmp_path_factory):
    """`dvc exp run` of the smoke config with a static student (from the smoke teacher, MiniLM) served
    asymmetrically: no student corpus pass, the index holds the teacher's matrix, /ready says so."""
    import faiss

    from tests.pipeline_fixtures import SMOKE, copy_repo, sh, shared_cache

    root = tmp_path_factory.mktemp("asym")
    repo = copy_repo(root / "repo")
    cache = shared_cache(root)
    sh(["dvc", "exp", "run", *SMOKE, "-S", "student=static", "-S", "student.model=minilm",
        "-S", "index.passages=teacher", "-S", "loss.embed=1.0", "-S", "train.corpus_epochs=1"], repo, cache)  # fmt: skip
    metrics = json.loads((repo / "metrics.json").read_text())
    fit = json.loads((repo / "artifacts/train/metrics.json").read_text())["corpus_fit_loss"]
    assert len(fit) == 1 and 0.0 < fit[0] < 2.0  # one epoch over the corpus toward the teacher's rows
    assert metrics["mode"] == "asymmetric" and metrics["student"] == "static"
    assert set(metrics["query_encode_ms"]) == {"student_torch", "teacher_torch_float32"} or \
        set(metrics["query_encode_ms"]) == {"student_torch", "teacher_torch_bfloat16"}
    for split in ("dev", "test"):
        assert set(metrics[split]["kd_ndcg@10_by_query_backend"]) == {"torch"}  # a static student: torch only
    meta = json.loads((repo / "artifacts/index/meta.json").read_text())
    assert meta["passages"] == "teacher" and meta["corpus_encoder"].startswith("teacher")
    assert not (cache / "encode" / "index").exists()  # no student corpus pass in asymmetric mode
    view = teacher_corpus.load(repo / "artifacts/teacher_corpus")
    loaded = index.load(repo / "artifacts/index")
    row = loaded.docids.index(view.docids[0])
    got = faiss.downcast_index(loaded.index).reconstruct(row) if hasattr(loaded.index, "reconstruct") else None
    if got is not None:
        assert np.allclose(got, view.emb[0], atol=1e-3)  # the index holds the teacher's row
    from sentence_transformers import SentenceTransformer

    student = SentenceTransformer(str(repo / "artifacts/student"), device="cpu")
    assert type(student[0]).__name__ == "StaticEmbedding"
    # the service loads it and says which mode it serves
    import yaml
    from litestar.testing import TestClient

    from service.app import create_app
    from service.settings import Settings

    params = params_from_dict(yaml.safe_load((repo / "params.yaml").read_text()))
    settings = Settings(repo / "artifacts/student", repo / "artifacts/index", params)
    with TestClient(app=create_app(settings)) as client:
        ready = client.get("/ready").json()
        assert ready["mode"] == "asymmetric" and ready["index"]["passages"] == "teacher"
        assert ready["student"]["max_seq_length"] == 0  # a static model reads whole texts
        hits = client.post("/search", json={"query": "how do I open a file", "k": 3}).json()
        assert len(hits["results"]) == 3


@pytest.mark.slow
@pytest.mark.pipeline
def test_symmetric_static_keeps_its_epoch_on_the_whole_corpus(tmp_path_factory):
    """A static student served symmetrically: its own corpus pass indexes, and training scores dev over
    every passage (not the pool a transformer uses), as `evaluate` scores it."""
    from tests.pipeline_fixtures import SMOKE, copy_repo, sh, shared_cache

    root = tmp_path_factory.mktemp("sym_static")
    repo = copy_repo(root / "repo")
    cache = shared_cache(root)
    sh(["dvc", "exp", "run", *SMOKE, "-S", "student=static", "-S", "student.model=minilm",
        "-S", "index.passages=student"], repo, cache)  # fmt: skip
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["mode"] == "symmetric" and metrics["student"] == "static"
    passages = sum(1 for _ in (repo / "data/corpus.jsonl").open())
    train = json.loads((repo / "artifacts/train/metrics.json").read_text())
    assert train["dev_pool_size"] == passages
    meta = json.loads((repo / "artifacts/index/meta.json").read_text())
    assert meta["passages"] == "student"


def test_layers_beyond_the_checkpoint_fail_before_the_long_passes():
    from kd.models.student_families import check_layers_exist

    check_layers_exist(ModelConfig(model="minilm", layers=[0, 5]))  # in range: nothing to say
    with pytest.raises(ConfigError, match=r"student\.layers=\[0, 9\] names layer 9, but minilm has 6"):
        check_layers_exist(ModelConfig(model="minilm", layers=[0, 9]))
