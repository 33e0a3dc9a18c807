"""kd.models.teacher_corpus: the matrix round-trips; one that doesn't match the corpus is refused (the pass: test_compute)."""

from pathlib import Path

import numpy as np
import pytest

from kd.errors import ArtifactError
from kd.models import teacher_corpus


def test_write_load_and_refusals(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    emb = np.eye(3, dtype=np.float32)
    fp = teacher_corpus.fingerprint(ids, ["x", "y", "z"], "key")
    teacher_corpus.write(tmp_path / "tc", ids, emb, {"fingerprint": fp})
    view = teacher_corpus.load(tmp_path / "tc", expect_fingerprint=fp, expect_docids=ids)
    np.testing.assert_array_equal(view.rows(["c", "a"]), emb[[2, 0]])
    hits = view.top_k(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), 2, exclude={"b"})
    assert [d for d, _ in hits[0]] == ["c", "a"]
    assert view.top_k(np.zeros(0, dtype=np.float32), 2) == []  # no queries (an encode of none): no rankings
    with pytest.raises(ArtifactError, match="does not match data/corpus.jsonl.*dvc repro teacher_corpus"):
        teacher_corpus.load(tmp_path / "tc", expect_docids=["a", "b"])
    other = teacher_corpus.fingerprint(ids, ["x", "y", "changed"], "key")
    assert other != fp  # a text change under the same ids changes the fingerprint
    with pytest.raises(ArtifactError, match="fingerprint.*dvc repro teacher_corpus"):
        teacher_corpus.load(tmp_path / "tc", expect_fingerprint=other)
    with pytest.raises(ArtifactError, match="holds no teacher corpus"):
        teacher_corpus.load(tmp_path / "missing")


def test_int8_teacher_pass_has_its_own_key_and_stays_close(tmp_path: Path) -> None:
    """`teacher.corpus_backend=onnx-int8`: the matrix comes from the int8 export (close to float32, not
    equal) under a key of its own, so it never stands in for the float matrix in any cache."""
    from dataclasses import replace

    from kd.compute import ModelSpec, ShardRunner
    from kd.config import ModelConfig
    from kd.models.teacher import corpus_key, model_key

    texts = [f"How do I {verb} a file in Python? Use the {mod} module." for verb, mod in
             [("copy", "shutil"), ("delete", "os"), ("read", "io"), ("compress", "gzip")]]  # fmt: skip
    fp32 = ModelConfig(name="minilm", model="minilm", kind="bi_encoder", max_seq_length=64, dtype="float32")
    int8 = replace(fp32, corpus_backend="onnx-int8")
    assert corpus_key(fp32) == model_key(fp32) and corpus_key(int8) != corpus_key(fp32)
    assert ModelSpec.teacher(int8).key() != ModelSpec.teacher(fp32).key()
    a = ShardRunner(ModelSpec.teacher(fp32), "encode").run(texts)
    b = ShardRunner(ModelSpec.teacher(int8), "encode").run(texts)
    cos = np.sum(a * b, axis=1)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-6)
    assert cos.min() > 0.95, cos
