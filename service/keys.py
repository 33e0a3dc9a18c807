"""API keys: stored only as argon2id hashes in one JSON file; `python -m service.keys` manages them.

A key looks like `kd_<id>_<secret>`. The public `<id>` finds the record, so a request costs one
argon2 verification at most; the secret is never written anywhere, only its argon2id hash (salted,
memory-hard). A key that verified once is remembered as a SHA-256 digest, compared with
`hmac.compare_digest`, so later requests cost microseconds, not an argon2 run. An unknown id is
still verified against a dummy hash, so timing does not tell whether an id exists. The file is
re-read when it changes on disk (a revoked key stops working within `RELOAD_S` seconds).

    python -m service.keys create alice            # prints the new key once
    python -m service.keys list
    python -m service.keys revoke <id>
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kd.errors import ConfigError

KEY_RE = re.compile(r"^kd_(?P<id>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_\-]{20,100})$")
RELOAD_S = 2.0
FORMAT_VERSION = 1


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)


@dataclass
class KeyRecord:
    id: str
    name: str
    hash: str
    created: str
    revoked: str | None = None


def _fix(path: Path) -> str:
    return f"create one with `python -m service.keys create NAME --file {path}`, or set service.auth: none"


def read_records(path: Path) -> list[KeyRecord]:
    """The key file's records; a ConfigError naming the file and the fix when missing or malformed."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"API key file {path} (service.api_keys_file) does not exist: {_fix(path)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"API key file {path} (service.api_keys_file) is unreadable ({exc}): check its permissions") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"API key file {path} (service.api_keys_file) is not valid JSON ({exc}): {_fix(path)}") from exc
    try:
        return [KeyRecord(**r) for r in raw["keys"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"API key file {path} (service.api_keys_file) is not a key file written by `python -m service.keys` "
            f"({exc!r}): {_fix(path)}"
        ) from exc


def write_records(path: Path, records: list[KeyRecord]) -> None:
    """Atomic write, readable by the owner only (the hashes are not secrets, but need not be public)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    body = {"version": FORMAT_VERSION, "keys": [r.__dict__ for r in records]}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


def create_key(path: Path, name: str) -> tuple[str, KeyRecord]:
    """A new key (returned once, never stored) and its record, appended to the file."""
    records = read_records(path) if path.exists() else []
    ids = {r.id for r in records}
    key_id = secrets.token_hex(4)
    while key_id in ids:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    record = KeyRecord(
        id=key_id, name=name, hash=_hasher().hash(secret), created=datetime.now(UTC).isoformat(timespec="seconds")
    )
    write_records(path, [*records, record])
    return f"kd_{key_id}_{secret}", record


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    records = read_records(path)
    for r in records:
        if r.id == key_id:
            if r.revoked is None:
                r.revoked = datetime.now(UTC).isoformat(timespec="seconds")
                write_records(path, records)
            return r
    known = ", ".join(r.id for r in records) or "none"
    raise ConfigError(f"no key with id {key_id!r} in {path} (ids: {known}); `python -m service.keys list` shows them")


class KeyStore:
    """Verifies presented keys against the file; thread-safe (verification runs in worker threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dummy = _hasher().hash(secrets.token_urlsafe(16))
        self._records: dict[str, KeyRecord] = {}
        self._verified: dict[str, bytes] = {}  # id -> sha256(secret) of a key that passed argon2
        self._stamp: tuple[int, int] = (0, 0)
        self._checked = 0.0
        self.reload(force=True)

    def reload(self, force: bool = False) -> None:
        """Re-read the file when its mtime/size changed (at most every RELOAD_S seconds)."""
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except OSError as exc:
            if force:
                raise ConfigError(f"API key file {self.path} (service.api_keys_file) does not exist: {_fix(self.path)}") from exc
            return  # deleted while running: keep serving the keys we had, the next start reports it
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return
        records = read_records(self.path)
        with self._lock:
            self._records = {r.id: r for r in records if r.revoked is None}
            self._verified = {i: d for i, d in self._verified.items() if i in self._records}
            self._stamp = stamp

    @property
    def active(self) -> int:
        return len(self._records)

    def check_cached(self, key: str) -> str | None:
        """The key id if this key verified before (microseconds), else None (then call `verify`)."""
        m = KEY_RE.match(key)
        if m is None:
            return None
        digest = self._verified.get(m["id"])
        if digest is not None and hmac.compare_digest(digest, hashlib.sha256(m["secret"].encode()).digest()):
            return m["id"]
        return None

    def verify(self, key: str) -> str | None:
        """Full argon2 check (tens of ms: run it off the event loop). The key id, or None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        m = KEY_RE.match(key)
        secret = m["secret"] if m else key
        record = self._records.get(m["id"]) if m else None
        try:
            _hasher().verify(record.hash if record else self._dummy, secret)
            ok = record is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or record is None:
            return None
        with self._lock:
            if record.id in self._records:
                self._verified[record.id] = hashlib.sha256(secret.encode()).digest()
        return record.id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description="Manage the service's API keys.")
    parser.add_argument("--file", type=Path, default=None, help="key file (default: service.api_keys_file)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("name", help="who or what the key is for")
    sub.add_parser("list", help="list keys (ids, names, dates; never the keys)")
    r = sub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id")
    args = parser.parse_args(argv)
    try:
        path = args.file
        if path is None:
            from kd.params import load_params

            path = Path(load_params(args.params).service.api_keys_file)
        if args.cmd == "create":
            key, record = create_key(path, args.name)
            print(key)
            print(f"key id {record.id} ({record.name}) added to {path}; the key is shown only now", file=sys.stderr)
        elif args.cmd == "list":
            for rec in read_records(path):
                state = f"revoked {rec.revoked}" if rec.revoked else "active"
                print(f"{rec.id}\t{rec.name}\t{rec.created}\t{state}")
        else:
            rec = revoke_key(path, args.id)
            print(f"revoked {rec.id} ({rec.name}) at {rec.revoked}", file=sys.stderr)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
