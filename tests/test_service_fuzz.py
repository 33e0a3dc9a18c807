"""Schema-driven fuzzing of every route in /schema/openapi.json: schemathesis' command line against the real service.

The test starts `python -m service` on the smoke artifacts (with the teacher's passage embeddings, so
reranks are fast, and a rate limit high enough never to trigger, so every documented limit is exercised,
not the limiter), then runs `schemathesis run` against its schema in a subprocess with every check on
every case: no 5xx, status codes, content types, headers and bodies as documented, schema-valid requests
accepted and schema-invalid ones refused. It reads schemathesis' JSON run report and asserts on the
number of generated cases and on zero failures and errors.

Schemathesis runs as a separate program, not through its pytest plugin: the plugin reaches into pytest's
private node attributes, which change between pytest releases. The upper bounds on pytest, schemathesis
and hypothesis in pyproject.toml's `dev` extra keep a fresh install on versions tested together.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.load import running_service
from kd.params import load_params
from tests.pipeline_fixtures import env
from tests.service_fixtures import teacher_corpus_dir

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40  # per operation and generation mode (schemathesis -n); ~7 operations
MIN_CASES = 200  # fewer generated cases than this means schemathesis skipped operations or phases
SEED = 13  # a fixed seed: the same cases on every run
STARTUP_S = 300
FUZZ_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def service_url(smoke_repo: Path, smoke_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` on a free loopback port, serving the smoke run's artifacts; stopped afterwards."""
    tmp = tmp_path_factory.mktemp("fuzz_service")
    raw = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    raw["service"].update(rerank=True, rate_limit_per_minute=1_000_000)
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    tc = teacher_corpus_dir(smoke_repo, load_params(params_file), tmp / "teacher_corpus")
    art = smoke_repo / "artifacts"
    extra = ["--params", str(params_file), "--student", str(art / "student"), "--index", str(art / "index"),
             "--teacher-corpus", str(tc)]  # fmt: skip
    with running_service(extra, None, STARTUP_S, env=env(smoke_cache)) as url:  # the service bench.load runs
        yield url


def served_requests(url: str) -> int:
    """Requests the service has answered so far, summed over routes and statuses from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return int(sum(float(v) for v in re.findall(r"^kd_http_requests_total\{[^}]*\} (\S+)$", text, flags=re.M)))


def schemathesis_cli() -> list[str]:
    """The `schemathesis` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "schemathesis"
    if script.is_file():
        return [str(script)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail('schemathesis is not installed: pip install -e ".[dev]"')
    return [found]


def test_api_conforms_to_its_schema(service_url: str, tmp_path: Path) -> None:
    report_path = tmp_path / "schemathesis.json"
    before = served_requests(service_url)
    cmd = [
        *schemathesis_cli(), "run", f"{service_url}/schema/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-database", "none",  # nothing remembered between runs: the seed alone decides the cases
        "--suppress-health-check", "all",
        "--workers", "1",
        "--request-timeout", "60",
        "--report", "json", "--report-json-path", str(report_path),
        "--no-color",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S)
    output = f"{' '.join(cmd)}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert report_path.is_file(), f"schemathesis wrote no JSON report ({proc.returncode}):\n{output}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    cases = report["test_cases"]
    assert report["complete"], f"schemathesis stopped early ({report['stop_reason']}):\n{output}"
    assert report["failures"] == [] and cases["with_failures"] == 0, f"{report['failures']}\n{output}"
    assert report["errors"] == [] and cases["errored"] == 0, f"{report['errors']}\n{output}"
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 5, report["operations"]
    assert cases["generated"] >= MIN_CASES, f"only {cases['generated']} cases generated:\n{output}"
    assert proc.returncode == 0, output
    served = served_requests(service_url) - before  # the cases reached this service, not some other
    assert served >= MIN_CASES, f"the service answered {served} requests for {cases['generated']} cases"
    print(f"\nschemathesis: {cases['generated']} cases over {report['operations']['tested']} operations, "
          f"0 failures ({served} requests served)")  # fmt: skip
