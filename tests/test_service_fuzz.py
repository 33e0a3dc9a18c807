"""Schema-driven fuzzing of every route in /schema/openapi.json (schemathesis, bounded examples).

Every schemathesis check runs on each case: no 5xx, status codes, content types, headers and bodies
as documented, schema-valid requests accepted and schema-invalid ones refused. The app serves the
smoke artifacts with the teacher's passage embeddings (fast rerank) and a rate limit high enough
never to trigger, so every documented limit is exercised, not the limiter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.testing import TestClient

from kd.config import load_params
from service.app import create_app
from service.engine import Settings
from tests.service_fixtures import teacher_corpus_dir

MAX_EXAMPLES = 40  # per operation and generation mode; ~7 operations
CASES: list[int] = []


@pytest.fixture(scope="module")
def fuzz_app(smoke_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Litestar]:
    params = load_params(smoke_repo / "params.yaml")
    params = replace(params, service=replace(params.service, rerank=True, rate_limit_per_minute=1_000_000))
    tc = teacher_corpus_dir(smoke_repo, params, tmp_path_factory.mktemp("teacher_corpus"))
    app = create_app(
        Settings(smoke_repo / "artifacts/student", smoke_repo / "artifacts/index", params, teacher_corpus_dir=tc)
    )
    with TestClient(app):  # runs startup: the engine is loaded and stays on app.state
        yield app


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Litestar) -> Any:
    return schemathesis.openapi.from_asgi("/schema/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case: Any) -> None:
    CASES.append(1)
    response = case.call_and_validate()
    assert response.status_code < 500


def test_fuzz_ran(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(CASES) >= 50, len(CASES)
    with capsys.disabled():
        print(f"\nschemathesis: {len(CASES)} cases, 0 failures")
