"""kd.teacher_corpus: the matrix round-trips; one that doesn't match the corpus is refused (the pass: test_compute)."""

from pathlib import Path

import numpy as np
import pytest

from kd import teacher_corpus
from kd.errors import ArtifactError


def test_write_load_and_refusals(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    emb = np.eye(3, dtype=np.float32)
    fp = teacher_corpus.fingerprint(ids, ["x", "y", "z"], "key")
    teacher_corpus.write(tmp_path / "tc", ids, emb, {"fingerprint": fp})
    view = teacher_corpus.load(tmp_path / "tc", expect_fingerprint=fp, expect_docids=ids)
    np.testing.assert_array_equal(view.rows(["c", "a"]), emb[[2, 0]])
    hits = view.top_k(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), 2, exclude={"b"})
    assert [d for d, _ in hits[0]] == ["c", "a"]
    with pytest.raises(ArtifactError, match="does not match data/corpus.jsonl.*dvc repro teacher_corpus"):
        teacher_corpus.load(tmp_path / "tc", expect_docids=["a", "b"])
    other = teacher_corpus.fingerprint(ids, ["x", "y", "changed"], "key")
    assert other != fp  # a text change under the same ids changes the fingerprint
    with pytest.raises(ArtifactError, match="fingerprint.*dvc repro teacher_corpus"):
        teacher_corpus.load(tmp_path / "tc", expect_fingerprint=other)
    with pytest.raises(ArtifactError, match="holds no teacher corpus"):
        teacher_corpus.load(tmp_path / "missing")
