"""params.yaml is the composition of conf/, and the typed view rejects bad keys by name."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from kd.compose import CONF_DIR, compose
from kd.config import DATA_SOURCES, Params
from kd.errors import ConfigError
from kd.params import params_from_dict
from tests.conftest import ROOT


def test_params_yaml_is_the_composition_of_conf():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert compose() == committed
    # the typed view reads every key, and every field is set explicitly in conf/, so nothing
    # silently falls back to a dataclass default (bar ModelConfig's role-specific fields: the
    # student has no kind/chunk_groups, the teacher no backend)
    flat, raw = params_from_dict(committed).flat(), _flatten(committed)
    assert {k: flat[k] for k in raw} == raw
    assert "student.kind" in set(flat) - set(raw)
    # one set of defaults: the dataclasses (what bench scripts and the service's Settings() get) equal conf/
    assert params_from_dict(committed) == Params()
    role_specific = {"student.kind", "student.chunk_groups", "teacher.backend"}
    role_specific |= {f"student.{k}" for k in ("corpus_chunk", "score_norm", "score_scale", "smoke_model", "dim")}
    role_specific |= {f"teacher.{k}" for k in ("layers", "dim", "learning_rate")}  # student-only keys
    role_specific |= {f"index.{k}" for k in ("nlist", "m", "nbits", "nprobe", "train_size", "add_batch")}  # ivfpq only
    assert set(flat) - set(raw) <= role_specific


def _flatten(raw: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in raw.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_dvc_composer_agrees(tmp_path):
    hydra_utils = pytest.importorskip("dvc.utils.hydra")
    dump = getattr(hydra_utils, "compose_and_dump", None)
    if dump is None:
        pytest.skip("this dvc has no compose_and_dump")
    out = tmp_path / "params.yaml"
    # (output_file, config_dir, config_module, config_name, plugins_path, overrides)
    dump(out, str(CONF_DIR), None, "config", str(tmp_path), [])
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((ROOT / "params.yaml").read_text())


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.learning_rte"):
        params_from_dict({"train": {"learning_rte": 1e-4}})
    with pytest.raises(ConfigError, match="unknown params key.*sede"):
        params_from_dict({"sede": 1})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"epochs": "two"}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),  # bool is not an int here
        ({"seed": 1.5}, "seed"),
        ({"service": {"rerank": "maybe"}}, "service.rerank"),  # OmegaConf reads "yes"/"300" as YAML would
        ({"data": {"max_passages": "many"}}, "data.max_passages"),
        ({"data": {"name": "msmarco", "debian_package": "x"}}, "data.debian_package"),  # not an msmarco key
        ({"data": {"name": "beir_dir"}}, "data.path"),  # required
        ({"loss": "heavy"}, "loss"),
        ({"mining": {"sources": ["bm25", "colbert"]}}, "mining.sources"),
        ({"mining": {"sources": []}}, "mining.sources"),
        ({"mining": {"sources": "dense"}}, "mining.sources"),
        ({"student": {"dtype": "float16"}}, "student.dtype"),
        ({"teacher": {"dtype": "bf16"}}, "teacher.dtype"),
        ({"student": {"corpus_backend": "tensorrt"}}, "student.corpus_backend"),
        ({"teacher": {"corpus_backend": "int4"}}, "teacher.corpus_backend"),
        ({"teacher": {"kind": "cross_encoder", "corpus_backend": "onnx-int8"}}, "teacher.corpus_backend"),
        ({"student": {"backend": "auto"}}, "student.backend"),  # auto picks a corpus pass, not a query encoder
        ({"eval": {"backends": ["torch", "openvino"]}}, "eval.backends"),
    ],
)
def test_wrong_type_is_named(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        params_from_dict(raw)


def test_ints_widen_to_float_and_none_allowed():
    p = params_from_dict({"train": {"learning_rate": 1}, "data": {"max_passages": None}})
    assert p.train.learning_rate == 1.0 and isinstance(p.train.learning_rate, float)
    assert p.data.max_passages is None
    assert params_from_dict({}) == Params()


def test_smoke_experiment_shrinks_data():
    full = params_from_dict(compose())
    smoke = params_from_dict(compose(["+experiment=smoke"]))
    assert smoke.data.max_passages is not None
    assert full.data.max_passages is None or smoke.data.max_passages < full.data.max_passages
    assert smoke.data.max_train_queries < full.data.max_train_queries
    assert smoke.train.epochs <= full.train.epochs
    assert smoke.data.name == full.data.name  # only sizes change


def test_full_experiment_lengthens_only_the_students_training():
    default = params_from_dict(compose())
    full = params_from_dict(compose(["+experiment=full"]))
    assert full.student.max_seq_length == full.train.max_seq_length == 256 > default.train.max_seq_length
    assert default.student.max_seq_length == 256  # the default encodes at 256 but trains at 128
    assert full.teacher == default.teacher and full.data == default.data and full.loss == default.loss
    assert full.train == replace(default.train, max_seq_length=256)  # the default's recipe, trained longer


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("teacher=bge_reranker_large", lambda p: p.teacher.kind == "cross_encoder"),
        ("student=e5_small_v2", lambda p: p.student.query_prefix == "query: "),
        ("data=msmarco", lambda p: p.data.name == "msmarco"),
        ("data=beir_dir", lambda p: p.data.name == "beir_dir"),
        (
            "data=django_docs_faq",  # same builder, another Debian docs package, release notes left out
            lambda p: (p.data.name, p.data.debian_package, p.data.exclude[0]) == ("python_docs_faq", "python-django-doc", "releases/"),
        ),
        (
            "data=sqlalchemy_docs_faq",  # a third docs package, never chosen on: reports how the default carries over
            lambda p: (p.data.name, p.data.debian_package, p.data.exclude[0]) == ("python_docs_faq", "python-sqlalchemy-doc", "changelog/"),
        ),
        ("index=hnsw", lambda p: p.index.type == "hnsw"),
    ],
)
def test_conf_group_options_compose(override, check):
    raw = compose([override])
    if override == "data=beir_dir":
        # data.path is mandatory (???) for beir_dir: unset it fails naming the key
        with pytest.raises(ConfigError, match=r"data\.path"):
            params_from_dict(raw)
        raw = compose([override, "data.path=/tmp/some-beir-folder"])
    assert check(params_from_dict(raw))


@pytest.mark.parametrize("name", sorted(DATA_SOURCES))
def test_each_data_source_has_its_own_keys_and_defaults(name):
    extra = ["data.path=/some/folder"] if name == "beir_dir" else []
    data = params_from_dict(compose([f"data={name}", *extra])).data
    assert type(data) is DATA_SOURCES[name]
    assert data == DATA_SOURCES[name](**({"path": "/some/folder"} if extra else {}))  # conf/data/ == the class
    assert hasattr(data, "debian_package") == (name == "python_docs_faq")
