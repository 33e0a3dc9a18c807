"""kd.distill.corpus_fit: a student trained on (passage, teacher embedding) pairs moves toward the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd.config import ModelConfig
from kd.distill.corpus_fit import EmbedLoss, corpus_targets, fit_corpus
from kd.errors import ConfigError
from kd.models.loading import encode, load_bi_encoder
from kd.models.student_families import initial_student
from kd.params import params_from_dict

STATIC = ModelConfig(name="static", kind="static", model="minilm", backend="torch", corpus_backend="torch")
TEXTS = [f"The {mod} module can {verb} files and directories, see section {i}." for i, (mod, verb) in
         enumerate([("shutil", "copy"), ("os", "remove"), ("pathlib", "glob"), ("gzip", "compress"), ("tarfile", "pack"),
                    ("zipfile", "extract"), ("tempfile", "create"), ("glob", "match")] * 4)]  # fmt: skip


def test_corpus_targets_leave_judged_passages_out():
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    texts, targets = corpus_targets(["a", "b", "c"], {"b"}, {"a": "x", "b": "y", "c": "z"}, rows, prefix="passage: ")
    assert texts == ["passage: x", "passage: z"]
    np.testing.assert_array_equal(targets, rows[[0, 2]].astype(np.float32))
    assert targets.dtype == np.float32


def test_embed_loss_is_one_minus_cosine_of_the_encoding():
    class Fixed(torch.nn.Module):
        def forward(self, features):
            return {"sentence_embedding": features["x"]}

    loss = EmbedLoss(Fixed())
    value = loss([{"x": torch.tensor([[3.0, 0.0], [0.0, 2.0]])}], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert float(value) == pytest.approx(0.5)  # cosines 1 and 0


def test_static_table_learns_the_teachers_embeddings(tmp_path):
    teacher = load_bi_encoder("minilm")
    targets = encode(teacher, TEXTS)
    student = load_bi_encoder(initial_student(STATIC))
    before = float(np.mean(np.sum(encode(student, TEXTS) * targets, axis=1)))
    losses = fit_corpus(student, TEXTS, targets, epochs=3, learning_rate=0.05, batch_size=8, max_seq_length=64,
                        seed=13, work_dir=tmp_path)  # fmt: skip
    after = float(np.mean(np.sum(encode(student, TEXTS) * targets, axis=1)))
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert after > before + 0.01, (before, after)


def test_width_mismatch_and_bad_epochs_are_named(tmp_path):
    student = load_bi_encoder(initial_student(STATIC))
    with pytest.raises(ConfigError, match=r"train\.corpus_epochs needs a student as wide as the teacher \(768\)"):
        fit_corpus(student, TEXTS[:4], np.zeros((4, 768), np.float32), 1, 0.01, 4, 64, 13, tmp_path)
    with pytest.raises(ConfigError, match=r"train\.corpus_epochs=-1"):
        params_from_dict({"train": {"corpus_epochs": -1}})
