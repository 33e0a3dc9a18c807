"""API keys (argon2id hashes, the `python -m service.keys` CLI) and rate limits, over the real app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from kd.config import Params
from kd.errors import ConfigError
from kd.params import load_params
from service import keys as keys_mod
from service.app import create_app
from service.engine import Engine
from service.keys import KeyStore, create_key, read_records, revoke_key
from service.ops import TokenBuckets
from service.settings import Settings
from service.startup import load_engine
from tests.service_fixtures import REPO

QUERY = {"query": "Why is it called Python?", "k": 3}


@pytest.fixture(scope="module")
def base(smoke_repo: Path) -> tuple[Settings, Engine]:
    params = load_params(smoke_repo / "params.yaml")
    settings = Settings(smoke_repo / "artifacts/student", smoke_repo / "artifacts/index", params, rerank=False)
    return settings, load_engine(settings)


def with_service(settings: Settings, **changes: Any) -> Settings:
    params: Params = settings.params
    return replace(settings, params=replace(params, service=replace(params.service, **changes)))


@pytest.fixture()
def key_file(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "keys.json"
    key, record = create_key(path, "alice")
    return path, key, record.id


@pytest.fixture()
def auth_client(base: tuple[Settings, Engine], key_file: tuple[Path, str, str]) -> Iterator[TestClient[Any]]:
    settings = with_service(base[0], auth="api_key", api_keys_file=str(key_file[0]))
    with TestClient(create_app(settings, engine=base[1])) as c:
        yield c


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "k" / "keys.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.keys", "--file", str(path), *args],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    made = cli("create", "ci-bot")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("kd_") and len(key) > 40 and "shown only now" in made.stderr
    stored = path.read_text()
    assert key not in stored and key.split("_", 2)[2] not in stored  # only the hash is kept
    (record,) = json.loads(stored)["keys"]
    assert record["hash"].startswith("$argon2id$") and record["name"] == "ci-bot"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    listed = cli("list")
    assert record["id"] in listed.stdout and "active" in listed.stdout and key not in listed.stdout
    assert cli("revoke", record["id"]).returncode == 0
    assert "revoked" in cli("list").stdout
    bad = cli("revoke", "nosuchid")
    assert bad.returncode == 1 and "nosuchid" in bad.stderr and "Traceback" not in bad.stderr


def test_store_verifies_and_caches(key_file: tuple[Path, str, str]) -> None:
    path, key, key_id = key_file
    store = KeyStore(path)
    assert store.check_cached(key) is None
    assert store.verify(key) == key_id
    assert store.check_cached(key) == key_id  # no argon2 on later requests
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.verify("kd_00000000_" + "x" * 43) is None
    assert store.verify("not a key") is None


@pytest.mark.slow
def test_missing_or_broken_key_file_names_it(base: tuple[Settings, Engine], tmp_path: Path) -> None:
    settings = with_service(base[0], auth="api_key", api_keys_file=str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match=r"none\.json.*service\.api_keys_file.*python -m service\.keys create"):
        create_app(settings, engine=base[1])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json.*not valid JSON"):
        create_app(with_service(base[0], auth="api_key", api_keys_file=str(broken)), engine=base[1])
    with pytest.raises(ConfigError, match=r"service\.auth='password'.*none, api_key"):
        create_app(with_service(base[0], auth="password"), engine=base[1])


@pytest.mark.slow
def test_cli_startup_error_is_one_line(smoke_repo: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    text = (smoke_repo / "params.yaml").read_text().replace("auth: none", "auth: api_key")
    text = text.replace("api_keys_file: secrets/api_keys.json", f"api_keys_file: {tmp_path / 'missing.json'}")
    params.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "service", "--params", str(params), "--student", str(smoke_repo / "artifacts/student"),
         "--index", str(smoke_repo / "artifacts/index"), "--no-rerank", "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "missing.json" in proc.stderr and "python -m service.keys create" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_auth_required(auth_client: TestClient[Any], key_file: tuple[Path, str, str]) -> None:
    _, key, _ = key_file
    r = auth_client.post("/search", json=QUERY)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "missing API key" in r.json()["detail"] and r.json()["status_code"] == 401
    r = auth_client.post("/search", json=QUERY, headers={"Authorization": "Bearer kd_00000000_" + "x" * 43})
    assert r.status_code == 401 and "valid API key" in r.json()["detail"]
    assert auth_client.post("/search", json=QUERY, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert auth_client.post("/search", json=QUERY, headers={"X-API-Key": key}).status_code == 200
    assert auth_client.get("/ready").status_code == 401
    assert auth_client.get("/ready", headers={"X-API-Key": key}).json()["auth"] == "api_key"
    assert auth_client.get("/metrics").status_code == 401
    # open: liveness, the page, the schema
    assert auth_client.get("/health").status_code == 200
    assert auth_client.get("/").status_code == 200
    spec = auth_client.get("/schema/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "401" in spec["paths"]["/search"]["post"]["responses"]


@pytest.mark.slow
def test_revoked_key_stops_working(
    auth_client: TestClient[Any], key_file: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key, key_id = key_file
    monkeypatch.setattr(keys_mod, "RELOAD_S", 0.0)
    assert auth_client.post("/search", json=QUERY, headers={"X-API-Key": key}).status_code == 200
    revoke_key(path, key_id)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert read_records(path)[0].revoked
    r = auth_client.post("/search", json=QUERY, headers={"X-API-Key": key})
    assert r.status_code == 401


@pytest.mark.slow
def test_rate_limit_per_key(base: tuple[Settings, Engine], key_file: tuple[Path, str, str], tmp_path: Path) -> None:
    path, key, _ = key_file
    other, _ = create_key(path, "bob")
    settings = with_service(
        base[0], auth="api_key", api_keys_file=str(path), rate_limit_per_minute=60, rate_limit_burst=3
    )
    with TestClient(create_app(settings, engine=base[1])) as c:
        codes = [c.post("/search", json=QUERY, headers={"X-API-Key": key}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.post("/search", json=QUERY, headers={"X-API-Key": key})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "service.rate_limit_per_minute" in r.json()["detail"] and "x-request-id" in r.headers
        assert c.post("/search", json=QUERY, headers={"X-API-Key": other}).status_code == 200  # its own bucket
        assert c.get("/health").status_code == 200  # never limited
        assert "kd_rate_limited_total 2.0" in c.get("/metrics", headers={"X-API-Key": other}).text


@pytest.mark.slow
def test_rate_limit_per_address_without_auth(base: tuple[Settings, Engine]) -> None:
    settings = with_service(base[0], rate_limit_per_minute=60, rate_limit_burst=2)
    with TestClient(create_app(settings, engine=base[1])) as c:
        codes = [c.post("/search", json=QUERY).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_token_bucket_refills() -> None:
    b = TokenBuckets(per_minute=60, burst=2)
    assert b.take("a", now=0.0) == 0 and b.take("a", now=0.0) == 0
    assert b.take("a", now=0.0) == pytest.approx(1.0)
    assert b.take("a", now=1.0) == 0  # one token per second
    assert b.take("b", now=1.0) == 0
    assert TokenBuckets(per_minute=600).burst == 60
