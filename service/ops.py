"""Per-request plumbing: request ids, API-key auth, rate limits, Prometheus metrics, access log.

One pure-ASGI middleware does all four, because each request should pay for one extra layer, not
four (on a 2-core machine every layer is measurable next to a ~4 ms search). It runs after routing,
so `scope["path_template"]` labels the metrics by route, not by raw path.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import time
import uuid
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.keys import KeyStore

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "x-request-id"
_RID_OK = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
OPEN_PATHS = ("/health", "/", "/favicon.ico")  # no key needed (the page asks for one when auth is on)
OPEN_PREFIXES = ("/schema",)
access_log = logging.getLogger("service.access")


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the current request's id, or "-") so every log line can carry it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def request_id_from(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is short and plain, else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _RID_OK.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class Metrics:
    """Prometheus series on a registry of their own (one per app, so tests can build many apps)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kd_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "kd_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.reranks_in_flight = Gauge(
            "kd_rerank_in_flight", "rerank requests running now (the rerank queue depth: reranks never wait)",
            registry=self.registry,
        )  # fmt: skip
        self.reranks_rejected = Counter(
            "kd_rerank_rejected", "rerank requests refused with 503 (all rerank slots busy)", registry=self.registry
        )
        self.auth_failures = Counter("kd_auth_failures", "requests refused with 401", registry=self.registry)
        self.rate_limited = Counter("kd_rate_limited", "requests refused with 429", registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class TokenBuckets:
    """Per-identity token bucket: `per_minute` sustained, `burst` at once. `take` -> seconds to wait (0 = ok)."""

    MAX_IDS = 50_000

    def __init__(self, per_minute: int, burst: int = 0) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst or max(1, per_minute // 10))
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, identity: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[identity] = (tokens - 1.0, now)
            return 0.0
        self._buckets[identity] = (tokens, now)
        if len(self._buckets) > self.MAX_IDS:  # forget idle (full) buckets; they would start full anyway
            self._buckets = {i: b for i, b in self._buckets.items() if b[0] + (now - b[1]) * self.rate < self.burst}
        return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope.get("headers", ()))


def presented_key(scope: Scope) -> str | None:
    """`Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    headers = _headers(scope)
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() or None if key is not None else None


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str], rid: str) -> None:
    body = msgspec.json.encode({"status_code": status, "detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((REQUEST_ID_HEADER.encode(), rid.encode()))
    start: Any = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Gate:
    """What the middleware needs from the app: the key store, the buckets, the metrics, and switches."""

    def __init__(
        self,
        metrics: Metrics,
        keys: KeyStore | None,
        buckets: TokenBuckets | None,
        log_access: bool,
    ) -> None:
        self.metrics = metrics
        self.keys = keys
        self.buckets = buckets
        self.log_access = log_access
        self.verify_limiter = anyio.CapacityLimiter(1)  # bad keys cost an argon2 run: one at a time, never both cores
        self._failed: dict[str, float] = {}  # recently failed keys -> when; answered without argon2

    async def identify(self, scope: Scope) -> str | None:
        """The key id for a valid key; None for a missing, unknown or revoked one."""
        assert self.keys is not None
        self.keys.reload()
        key = presented_key(scope)
        if not key or len(key) > 200:
            return None
        key_id = self.keys.check_cached(key)
        if key_id is not None:
            return key_id
        now = time.monotonic()
        if now - self._failed.get(key, -1e9) < 60.0:
            return None
        key_id = await anyio.to_thread.run_sync(self.keys.verify, key, limiter=self.verify_limiter)
        if key_id is None:
            if len(self._failed) > 10_000:
                self._failed.clear()
            self._failed[key] = now
        return key_id


def gate_middleware(gate: Gate) -> type[ASGIMiddleware]:
    """The middleware class bound to `gate` (Litestar instantiates middleware per app)."""

    class ServiceMiddleware(ASGIMiddleware):
        scopes = (ScopeType.HTTP,)

        async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
            start = time.perf_counter()
            rid = request_id_from(scope)
            token = REQUEST_ID.set(rid)
            scope.setdefault("state", {})["request_id"] = rid
            status = 500
            rid_header = (REQUEST_ID_HEADER.encode(), rid.encode())

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", ()))
                    if not any(k.lower() == rid_header[0] for k, _ in headers):  # exception handlers set it too
                        headers.append(rid_header)
                    message["headers"] = headers
                await send(message)

            path = scope.get("path", "")
            try:
                identity: str | None = None
                if gate.keys is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                    identity = await gate.identify(scope)
                    if identity is None:
                        gate.metrics.auth_failures.inc()
                        status = 401
                        detail = (
                            "a valid API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>` "
                            "(unknown and revoked keys are refused)"
                            if presented_key(scope)
                            else "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                        )
                        await send_error(send, 401, detail, {"WWW-Authenticate": 'Bearer realm="kd-search"'}, rid)
                        return
                    identity = f"key:{identity}"
                if gate.buckets is not None and path != "/health":
                    if identity is None:
                        client = scope.get("client")
                        identity = f"ip:{client[0] if client else '-'}"
                    wait = gate.buckets.take(identity)
                    if wait > 0:
                        gate.metrics.rate_limited.inc()
                        status = 429
                        retry = str(max(1, math.ceil(wait)))
                        detail = f"rate limit exceeded (service.rate_limit_per_minute): retry in {retry} s"
                        await send_error(send, 429, detail, {"Retry-After": retry}, rid)
                        return
                await next_app(scope, receive, send_with_id)
            except Exception as exc:
                status = int(getattr(exc, "status_code", 500))
                raise
            finally:
                elapsed = time.perf_counter() - start
                route = str(scope.get("path_template") or path)
                method = str(scope.get("method", ""))
                gate.metrics.observe(method, route, status, elapsed)
                if gate.log_access:
                    access_log.info("%s %s %d %.1f ms", method, path, status, elapsed * 1000)
                REQUEST_ID.reset(token)

    return ServiceMiddleware


def handler_error_headers(scope: Scope) -> dict[str, str]:
    """The request id for responses made by exception handlers (they run outside the middleware)."""
    rid = (scope.get("state") or {}).get("request_id") or uuid.uuid4().hex
    return {REQUEST_ID_HEADER: str(rid)}

