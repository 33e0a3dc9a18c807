"""Shared, session-scoped fixtures: the real CPython docs, the full FAQ dataset, the packaged MiniLM."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from kd.params import load_params  # noqa: E402
from tests.browser_fixtures import browser  # noqa: E402, F401  (one headless chromium per test module)
from tests.onnx_fixtures import exported  # noqa: E402, F401  (one ONNX export per session)
from tests.pipeline_fixtures import smoke_cache, smoke_repo  # noqa: E402, F401  (one smoke run per session)

ROOT = Path(__file__).resolve().parent.parent

# Test tiers (markers registered in pyproject.toml; `pytest -m "not slow"` is the inner loop). Tests carry their
# markers explicitly; a test that uses one of these fixtures gets them too, so a new test on the smoke run, the
# ONNX export or chromium cannot land in the fast tier by omission.
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "smoke_repo": ("slow",),  # one real `dvc exp run -S +experiment=smoke` per test session (minutes)
    "smoke_cache": ("slow",),
    "exported": ("slow",),  # an ONNX + int8 export of MiniLM (~30 s)
    "browser": ("slow", "browser"),  # headless chromium through selenium
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        have = {m.name for m in item.iter_markers()}
        for fixture in set(getattr(item, "fixturenames", ())) & FIXTURE_MARKS.keys():
            for name in FIXTURE_MARKS[fixture]:
                if name not in have:
                    item.add_marker(getattr(pytest.mark, name))
                    have.add(name)


@pytest.fixture(scope="session")
def params():
    return load_params(ROOT / "params.yaml")


def build_kwargs(params) -> dict:
    """`kd.data.python_docs_faq.build` keyword arguments from the committed params."""
    d = params.data
    return dict(
        min_words=d.min_words,
        max_words=d.max_words,
        max_passages=d.max_passages,
        max_train_queries=d.max_train_queries,
        max_dev_queries=d.max_dev_queries,
        max_test_queries=d.max_test_queries,
        dev_fraction=d.dev_fraction,
        exclude=tuple(d.exclude),
        seed=params.seed,
    )


@pytest.fixture(scope="session")
def doc_sources():
    """(the `_sources` folder of python3.11-doc, its version), fetched once into .cache/debian."""
    from kd.data.debian import fetch_debian_docs

    return fetch_debian_docs("python3.11-doc", cache=ROOT / ".cache" / "debian")


@pytest.fixture(scope="session")
def faq_full(doc_sources, params):
    """The full dataset exactly as the `data` stage builds it from params.yaml."""
    from kd.data.python_docs_faq import build

    sources, version = doc_sources
    return build(sources, f"debian:{version}", **build_kwargs(params))


@pytest.fixture(scope="session")
def minilm():
    from kd.models.loading import load_bi_encoder

    return load_bi_encoder("minilm")
