"""Packaged models load offline and rank sensibly; both teacher kinds; load errors are actionable."""

from __future__ import annotations

import numpy as np
import pytest

from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.models import BiEncoderTeacher, encode, load_bi_encoder, load_teacher, minilm_path

QUERY = "How do I copy a file in Python?"
PARAPHRASE = "What is the way to duplicate a file using Python?"
UNRELATED = "The weather in Paris is sunny and warm today."


def assert_ranks_paraphrase_first(model):
    q, para, other = encode(model, [QUERY, PARAPHRASE, UNRELATED])
    assert np.allclose(np.linalg.norm([q, para, other], axis=1), 1.0, atol=1e-4)
    assert q @ para > q @ other + 0.3


def test_minilm_offline(minilm):
    assert_ranks_paraphrase_first(minilm)
    assert encode(minilm, ["x"]).dtype == np.float32


@pytest.fixture(scope="module")
def mpnet():
    return load_bi_encoder("mpnet", max_seq_length=64)


def test_mpnet_offline(mpnet):
    assert mpnet.max_seq_length == 64
    assert mpnet.get_embedding_dimension() == 768
    assert_ranks_paraphrase_first(mpnet)


def test_bi_encoder_teacher_scores(minilm):
    teacher = BiEncoderTeacher(ModelConfig(model="minilm", batch_size=2, dtype="float32"), model=minilm)
    scores = teacher.score([QUERY, QUERY, QUERY], [PARAPHRASE, UNRELATED, PARAPHRASE])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > scores[1]
    assert scores[0] == pytest.approx(scores[2], abs=1e-6)  # repeated pairs encoded once, same score
    q, p = encode(minilm, [QUERY, UNRELATED])
    assert scores[1] == pytest.approx(float(q @ p), abs=1e-5)
    bf16 = BiEncoderTeacher(ModelConfig(model="minilm", batch_size=2, dtype="bfloat16"), model=minilm)
    assert bf16.score([QUERY, QUERY], [PARAPHRASE, UNRELATED]) == pytest.approx(scores[:2], abs=5e-3)


def test_cross_encoder_teacher(tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)  # the classification head is freshly initialised
    CrossEncoder(str(minilm_path()), num_labels=1).save(str(tmp_path))
    cfg = ModelConfig(name="tiny_ce", kind="cross_encoder", model=str(tmp_path), max_seq_length=64, batch_size=2)
    teacher = load_teacher(cfg)
    scores = teacher.score([QUERY] * 3, [PARAPHRASE, UNRELATED, PARAPHRASE])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    assert scores[0] == pytest.approx(scores[2], abs=1e-5)
    assert teacher.model.max_seq_length == 64


def test_e5_prefixes_applied(minilm):
    plain = BiEncoderTeacher(ModelConfig(model="minilm"), model=minilm)
    e5 = BiEncoderTeacher(ModelConfig(model="minilm", query_prefix="query: ", passage_prefix="passage: "), model=minilm)
    assert not np.allclose(plain.encode_queries([QUERY]), e5.encode_queries([QUERY]))
    assert np.allclose(e5.encode_queries([QUERY]), encode(minilm, ["query: " + QUERY]), atol=1e-6)
    assert np.allclose(e5.encode_passages([QUERY]), encode(minilm, ["passage: " + QUERY]), atol=1e-6)


def test_uncached_hub_id_names_model_and_offline_cause(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_bi_encoder("intfloat/e5-small-v2")
    message = str(info.value)
    assert "'intfloat/e5-small-v2'" in message
    assert "HF_HUB_OFFLINE=1" in message and "not in the local hub cache" in message


def test_uncached_cross_encoder_teacher_fails_the_same_way():
    cfg = ModelConfig(kind="cross_encoder", model="BAAI/bge-reranker-large")
    with pytest.raises(ModelLoadError, match=r"(?s)'BAAI/bge-reranker-large'.*HF_HUB_OFFLINE=1"):
        load_teacher(cfg)


def test_broken_local_folder_names_the_folder(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        load_bi_encoder(str(tmp_path))


def test_unknown_teacher_kind():
    with pytest.raises(ModelLoadError, match=r"teacher\.kind='colbert'"):
        load_teacher(ModelConfig(kind="colbert", model="minilm"))
