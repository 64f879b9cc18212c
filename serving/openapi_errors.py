"""What the generated OpenAPI spec leaves out: the statuses the middleware answers (401, 403,
413, 415, 429, 503) and the key schemes, and BentoML's own 400 body for score_features (its
`detail` is pydantic's list of errors, not the string BentoML's spec says).

`document_errors_and_keys(spec, ...)` is one transform of the spec dict (serving/http.py
SpecTransformMiddleware runs the list service.py gives it), so other transforms compose with
it. Operation-level security is declared only when keys are configured: an open API has
nothing to send, and the schemes stay listed under components either way.
"""

from __future__ import annotations

from typing import Any

API_PREFIX = "/api/v1/"
ADMIN_PATHS = ("/api/v1/models/reload",)
METRICS_PATHS = ("/metrics", "/api/v1/metrics")
# The API routes that never answer 503 (the others call the model runner or may read the
# market store).
NEVER_BUSY = ("/api/v1/health", "/api/v1/metrics")
JSON_ONLY = ("/api/v1/score_features",)  # 415 for another Content-Type (serving/http.py)
PROBES = ("/readyz", "/healthz")  # 503 until the service is ready

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}
SCHEMES = {
    "ApiKey": {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "One of VCP_API_KEYS (or VCP_ADMIN_KEYS, needed for "
                       "/api/v1/models/reload). Without configured keys the API is open. "
                       "Repeated wrong keys from one address are answered 429 for a while.",
    },
    "MetricsKey": {
        "type": "http", "scheme": "bearer",
        "description": "VCP_METRICS_KEY for /metrics (Prometheus: `authorization: "
                       "{type: Bearer, credentials: KEY}`); also accepted as X-API-Key.",
    },
}
ERRORS = {
    401: "No key, or not a valid one",
    403: "A valid key that is not an admin key",
    413: "Request body larger than this route accepts",
    415: "Body not sent as application/json",
    429: "Rate limit exceeded, or too many wrong keys from this address (see Retry-After)",
    503: "Temporarily unable to answer: retry after Retry-After seconds",
}
# BentoML's 400 for a body its input model refuses.
VALIDATION_400 = {
    "type": "object", "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"type": "object"},
                   "description": "pydantic's errors: loc, msg, type"},
    },
}


def _response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": ERRORS[status],
                           "content": {"application/json": {"schema": ERROR_REF}}}
    if status in (429, 503):
        out["headers"] = RETRY_AFTER
    return out


def _add(op: dict[str, Any], *statuses: int) -> None:
    responses = op.setdefault("responses", {})
    for status in statuses:
        if str(status) not in responses and status not in responses:
            responses[str(status)] = _response(status)


def document_errors_and_keys(spec: dict[str, Any], *, keys: bool,
                             metrics_key: bool) -> dict[str, Any]:
    """`spec` with the middleware's statuses and the key schemes documented. `keys`: API keys
    are configured; `metrics_key`: VCP_METRICS_KEY is."""
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SCHEMES)
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("ErrorResponse", {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {}}})
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or method not in ("get", "post", "put", "delete"):
                continue
            if path.startswith(API_PREFIX):
                _add(op, 429)
                if keys or (metrics_key and path in METRICS_PATHS):
                    _add(op, 401)
                if path in ADMIN_PATHS and keys:
                    _add(op, 403)
                if "requestBody" in op:
                    _add(op, 413)
                if path in JSON_ONLY:  # BentoML-native: a JSON body, always
                    _add(op, 415)
                    op.setdefault("requestBody", {})["required"] = True
                    op["responses"]["400"] = {
                        "description": "The body does not match the input model",
                        "content": {"application/json": {"schema": VALIDATION_400}}}
                    op["responses"].pop(400, None)
                if path not in NEVER_BUSY:
                    _add(op, 503)
                    op["responses"]["503"].setdefault("headers", RETRY_AFTER)
                security: list[dict[str, list[str]]] = []
                if keys:
                    security.append({"ApiKey": []})
                if metrics_key and path in METRICS_PATHS:
                    security.append({"MetricsKey": []})
                if security:
                    op["security"] = security
            elif path == "/metrics" and metrics_key:
                _add(op, 401)
                op["security"] = [{"MetricsKey": []}]
            elif path in PROBES:
                _add(op, 503)
    return spec
