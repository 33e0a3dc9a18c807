"""Packaged models load offline and rank sensibly; both teacher kinds; load errors are actionable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.models import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    check_prompts,
    encode,
    load_bi_encoder,
    load_teacher,
    minilm_path,
    save_prompts,
    tiny_cross_encoder_pairs,
    tiny_cross_encoder_path,
    untrained_head,
)

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


@pytest.fixture(scope="module")
def tiny_ce() -> str:
    """The packaged cross-encoder stand-in (built once into .cache/models/, seconds)."""
    return str(tiny_cross_encoder_path())


def _raw_logits(model, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The Hugging Face model's own logits, bypassing sentence-transformers' predict()."""
    import torch

    from kd.models import cross_encoder_module

    module = cross_encoder_module(model)
    enc = module.tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return module.auto_model(**enc).logits.float().numpy()


def test_cross_encoder_teacher_scores_raw_logits(tiny_ce):
    """Bug: CrossEncoder.predict applied a sigmoid, so the student learnt probabilities."""
    cfg = ModelConfig(name="tiny", kind="cross_encoder", model=tiny_ce, max_seq_length=64, batch_size=2, dtype="float32")
    teacher = load_teacher(cfg)
    assert isinstance(teacher, CrossEncoderTeacher)
    scores = teacher.score([QUERY] * 3, [PARAPHRASE, UNRELATED, PARAPHRASE])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] == pytest.approx(scores[2], abs=1e-5)
    assert teacher.model.max_seq_length == 64
    logits = _raw_logits(teacher.model, [(QUERY, PARAPHRASE), (QUERY, UNRELATED)])[:, 0]
    assert scores[:2] == pytest.approx(logits, abs=1e-4)
    assert not np.allclose(scores[:2], 1 / (1 + np.exp(-logits)), atol=1e-3)  # not squashed
    assert scores[0] > scores[1]  # a trained head: the related passage ranks first


def test_tiny_cross_encoder_ranks_by_overlap(tiny_ce):
    teacher = load_teacher(ModelConfig(kind="cross_encoder", model="tiny_cross_encoder", max_seq_length=64))
    pairs, labels = tiny_cross_encoder_pairs(16, seed=99)  # unseen pairs from the same recipe
    s = teacher.score([q for q, _ in pairs], [d for _, d in pairs]).reshape(-1, 2)
    assert (s[:, 0] > s[:, 1]).mean() >= 0.75, s
    assert untrained_head(teacher.model, tiny_ce) == []


def test_two_label_head_scores_relevant_minus_not(tmp_path):
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(minilm_path()), num_labels=2).save(str(tmp_path))  # saved head: not "newly initialised"
    teacher = load_teacher(ModelConfig(kind="cross_encoder", model=str(tmp_path), max_seq_length=64, dtype="float32"))
    logits = _raw_logits(teacher.model, [(QUERY, PARAPHRASE), (QUERY, UNRELATED)])
    assert teacher.score([QUERY] * 2, [PARAPHRASE, UNRELATED]) == pytest.approx(logits[:, 1] - logits[:, 0], abs=1e-4)


def test_embedding_model_as_cross_encoder_is_refused():
    """Bug: `+experiment=smoke -S teacher=bge_reranker_large` loaded MiniLM (a bi-encoder) as a
    CrossEncoder with a freshly initialised head and distilled its random scores."""
    with pytest.raises(ModelLoadError) as info:
        load_teacher(ModelConfig(kind="cross_encoder", model="minilm"))
    message = str(info.value)
    assert "teacher.model='minilm'" in message and "classifier.weight" in message
    assert "teacher.kind=bi_encoder" in message and "reranker checkpoint" in message


def test_smoke_keeps_the_chosen_teacher_kind():
    """`+experiment=smoke` swaps in each teacher's own tiny stand-in, of the same kind."""
    from kd.compose import compose

    for teacher, kind, model in (("mpnet", "bi_encoder", "minilm"), ("bge_reranker_large", "cross_encoder", "tiny_cross_encoder")):
        got = compose(["+experiment=smoke", f"teacher={teacher}"])["teacher"]
        assert (got["kind"], got["model"]) == (kind, model), teacher
    full = compose(["teacher=bge_reranker_large"])["teacher"]
    assert full["model"] == "BAAI/bge-reranker-large" and full["score_norm"] == "standardize"


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


def test_prompts_travel_with_the_saved_student(tmp_path: Path) -> None:
    e5_like = ModelConfig(model="minilm", query_prefix="query: ", passage_prefix="passage: ")
    model = load_bi_encoder("minilm", 32)
    check_prompts(model, ModelConfig(model="minilm"), "the package")  # nothing saved: nothing to compare
    save_prompts(model, e5_like)
    model.save(str(tmp_path / "student"))
    again = load_bi_encoder(str(tmp_path / "student"), 32)
    assert again.prompts["query"] == "query: " and again.prompts["passage"] == "passage: "
    check_prompts(again, e5_like, "artifacts/student")
    with pytest.raises(ModelLoadError, match=r"query prompt 'query: '.*student\.query_prefix"):
        check_prompts(again, ModelConfig(model="minilm"), "artifacts/student")
