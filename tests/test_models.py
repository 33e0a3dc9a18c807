"""Loading by config name: packaged models offline, load errors that say what to do, prompts saved with the student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kd.config import ModelConfig
from kd.errors import ModelLoadError
from kd.models.loading import check_prompts, encode, load_bi_encoder, save_prompts
from kd.models.teacher import load_teacher

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


@pytest.mark.slow
def test_mpnet_offline(mpnet):
    assert mpnet.max_seq_length == 64
    assert mpnet.get_embedding_dimension() == 768
    assert_ranks_paraphrase_first(mpnet)


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


def test_uncached_hub_id_names_model_and_offline_cause(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_bi_encoder("intfloat/e5-small-v2")
    message = str(info.value)
    assert "'intfloat/e5-small-v2'" in message
    assert "HF_HUB_OFFLINE=1" in message and "not in the local hub cache" in message


def test_broken_local_folder_names_the_folder(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        load_bi_encoder(str(tmp_path))


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
