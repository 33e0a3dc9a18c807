"""How the service says no: strict request decoding (`StrictJSON`), validation messages that name the field
and the limit (`explain`), and the JSON error responses (`{"status_code", "detail"}`) for every 4xx/5xx.

No `from __future__ import annotations`: Litestar reads the real types of the DTO.
"""

import logging
import re
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request, Response
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from service.ops import REQUEST_ID, Metrics, handler_error_headers
from service.schemas import (
    ErrorResponse,
)

log = logging.getLogger("service")


S = TypeVar("S", bound=msgspec.Struct)

# msgspec error path -> the config key that sets the limit it broke
LIMIT_KEYS = {
    "$.query": "service.max_query_chars",
    "$.queries": "service.max_batch",
    "$.queries[": "service.max_query_chars",
    "$.k": "service.max_k",
    "$.rerank_depth": "service.max_rerank_depth",
    "$.rerank_top_k": "service.max_rerank_depth",
    "$.texts": "service.max_encode_texts",
    "$.texts[": "service.max_encode_chars",
}
_PATH = re.compile(r" - at `(?P<path>\$[^`]*)`$")


def explain(message: str) -> str:
    """msgspec's message, with the config key of a broken limit and a plain word for blank text."""
    m = _PATH.search(message)
    if not m:
        return message
    path = m["path"]
    if "matching regex" in message or "`str` of length >= 1" in message:
        return f"{path} is empty or only whitespace: send some text"
    if "<=" in message:
        key = LIMIT_KEYS.get(path) or LIMIT_KEYS.get(path.split("[")[0] + "[" if "[" in path else path)
        if key:
            return f"{message} ({key})"
    return message


def _integral(value: Any) -> Any:
    """Floats with no fractional part (5.0, 1e2) as ints, through dicts and lists."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


class StrictJSON(MsgspecDTO[S], Generic[S]):
    """Decode the body straight into the Struct with msgspec, strictly, limits included.

    Litestar's default conversion is lax (it turns `"k": "5"` into 5); a search API should refuse
    wrong types instead. Decoding bytes -> Struct in one step is also the cheapest path.
    """

    def decode_bytes(self, value: bytes) -> Any:
        try:
            return msgspec.json.decode(value, type=self.model_type, strict=True)
        except msgspec.ValidationError as exc:
            if "got `float`" in str(exc):  # JSON Schema counts 5.0 as an integer, so the API does too
                try:
                    return msgspec.convert(_integral(msgspec.json.decode(value)), type=self.model_type, strict=True)
                except msgspec.ValidationError as again:
                    exc = again
            raise ValidationException(detail=f"invalid request body: {explain(str(exc))}") from exc
        except msgspec.DecodeError as exc:
            raise ValidationException(detail=f"request body is not valid JSON: {exc}") from exc

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        """Document the Struct itself rather than a DTO-generated transfer model."""
        annotation = FieldDefinition.from_annotation(cls.model_type, kwarg_definition=field_definition.kwarg_definition)
        result: Reference | Schema = schema_creator.for_field_definition(annotation)
        return result


def bad_request(detail: str) -> ValidationException:
    return ValidationException(detail=detail)


def _error_response(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response({"status_code": status_code, "detail": detail}, status_code=status_code, headers=headers)


def _record_unrouted(request: Request[Any, Any, Any], status: int) -> None:
    """404/405 come from routing, before the middleware: count them here."""
    if "request_id" not in (request.scope.get("state") or {}):
        metrics: Metrics | None = request.app.state.get("metrics")
        if metrics is not None:
            metrics.observe(request.method, "<unmatched>", status, 0.0)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Flatten Litestar's errors into `{"status_code", "detail"}` with a detail that names the field."""
    detail = exc.detail
    headers = {**(exc.headers or {}), **handler_error_headers(request.scope)}
    if exc.status_code == 413:
        limit = request.app.state.get("max_body_bytes")
        detail = f"request body is too large: the limit is {limit} bytes (service.max_body_bytes)"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}: use {headers.get('allow', '?')}"
    elif isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        parts = []
        for item in exc.extra:
            if not isinstance(item, dict):
                continue
            key, message = item.get("key"), item.get("message")
            if key == "data" and message == "'data'":
                parts.append('request body is empty: send a JSON object such as {"query": "..."}')
            else:
                parts.append(f"{key}: {message}")
        detail = "; ".join(parts) or detail
    if exc.status_code in (404, 405):
        _record_unrouted(request, exc.status_code)
    return _error_response(exc.status_code, detail, headers)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    headers = handler_error_headers(request.scope)
    token = REQUEST_ID.set(headers["x-request-id"])
    try:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    finally:
        REQUEST_ID.reset(token)
    return _error_response(500, f"internal server error ({type(exc).__name__})", headers)


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    what = {
        400: "bad input: the detail names the field and the limit",
        401: "missing, unknown or revoked API key (WWW-Authenticate says how to send one)",
        413: "request body over service.max_body_bytes",
        429: "rate limit exceeded (Retry-After says when to retry)",
        503: "all rerank slots busy, or the engine is still loading (Retry-After)",
    }
    return {c: ResponseSpec(ErrorResponse, description=what[c], generate_examples=False) for c in codes}


