"""kd.choices: each one-word key accepts its vocabulary and names the key, the choices and the fix otherwise."""

import pytest

from kd.choices import (
    BACKENDS,
    CORPUS_BACKENDS,
    DTYPES,
    SCORE_NORMS,
    check_backend,
    check_corpus_backend,
    check_dtype,
    check_layers,
    check_score_norm,
)
from kd.errors import ConfigError
from kd.params import params_from_dict


@pytest.mark.parametrize(
    ("check", "vocabulary", "key"),
    [
        (check_backend, BACKENDS, "eval.backends"),
        (check_corpus_backend, CORPUS_BACKENDS, "teacher.corpus_backend"),
        (check_dtype, DTYPES, "train.dtype"),
        (check_score_norm, SCORE_NORMS, "teacher.score_norm"),
    ],
)
def test_each_vocabulary_is_accepted_and_anything_else_named(check, vocabulary, key) -> None:  # type: ignore[no-untyped-def]
    assert [check(v, key) for v in vocabulary] == list(vocabulary)
    with pytest.raises(ConfigError) as err:
        check("fp8", key)
    assert f"{key}='fp8' is unknown" in str(err.value) and all(v in str(err.value) for v in vocabulary)


@pytest.mark.parametrize(
    ("layers", "says"),
    [([], "keeps no layer"), ([0, -1], "negative index"), ([0, 2, 2], "repeats a layer"), ([2, 0], "out of order")],
)
def test_bad_layer_lists_are_named(layers, says) -> None:  # type: ignore[no-untyped-def]
    check_layers(None)
    check_layers([0, 2, 5])
    with pytest.raises(ConfigError, match=f"student.layers=.*{says}"):
        check_layers(layers)


def test_params_reject_an_unknown_score_norm_by_its_key() -> None:
    with pytest.raises(ConfigError, match=r"teacher\.score_norm='zscore' is unknown: use one of none, standardize"):
        params_from_dict({"teacher": {"score_norm": "zscore"}})
