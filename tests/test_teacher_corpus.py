"""kd.teacher_corpus: chunked, resumable corpus pass; a matrix that doesn't match the corpus is refused."""

from pathlib import Path

import numpy as np
import pytest

from kd import teacher_corpus
from kd.errors import ArtifactError


def fake_encode(calls: list[int]):
    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        v = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return encode


def test_resumes_from_kept_chunks(tmp_path: Path) -> None:
    texts = [f"passage {'x' * i}" for i in range(10)]
    calls: list[int] = []
    full = teacher_corpus.encode_chunked(texts, fake_encode(calls), tmp_path / "c", chunk=4)
    assert calls == [4, 4, 2] and full.shape == (10, 2) and full.dtype == np.float16
    (tmp_path / "c" / "part-00001.npy").unlink()  # as if killed during the second chunk
    calls.clear()
    again = teacher_corpus.encode_chunked(texts, fake_encode(calls), tmp_path / "c", chunk=4)
    assert calls == [4]  # only the missing chunk is encoded again
    np.testing.assert_array_equal(full, again)


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
