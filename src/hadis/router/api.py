"""The OpenAI images API as the router speaks it: request validation and error bodies.

Pure functions (no HTTP server here) so every bad input is tested fast. Errors use OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, so the ``openai`` client raises
the matching exception (``BadRequestError`` for 400, ``RateLimitError`` for 429, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hadis.router.config import RouterConfig

KNOWN_FIELDS = {"prompt", "n", "size", "response_format", "model", "user", "seed", "quality", "style"}
# OpenAI's fields the router takes and ignores (the cascade picks the model): strings when given.
IGNORED_STRING_FIELDS = ("model", "user", "quality", "style")


class ApiError(Exception):
    """An error answered to the client: HTTP status plus an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        extra_headers: dict[str, str] | None = None,
        reason: str = "invalid",
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.extra_headers = dict(extra_headers or {})
        self.reason = reason  # a 4xx's label on the router's rejected-requests counter

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        out = dict(self.extra_headers)
        if self.retry_after_s is not None:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    n: int
    seed: int | None


def parse_generation_request(body: bytes, cfg: RouterConfig) -> GenerationRequest:
    """Validate a ``POST /v1/images/generations`` body against the router's configuration."""
    if len(body) > cfg.limits.max_body_bytes:
        raise ApiError(413, f"request body is {len(body)} bytes; the limit is {cfg.limits.max_body_bytes}")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "request body must be a JSON object")
    prompt = doc.get("prompt")
    if prompt is None:
        raise ApiError(400, "'prompt' is required", param="prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, f"'prompt' must be a string, got {type(prompt).__name__}", param="prompt")
    if not prompt.strip():
        raise ApiError(400, "'prompt' must not be empty", param="prompt")
    if len(prompt) > cfg.limits.max_prompt_chars:
        raise ApiError(
            400, f"'prompt' has {len(prompt)} characters; the limit is {cfg.limits.max_prompt_chars}", param="prompt"
        )
    n = doc.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise ApiError(400, f"'n' must be an integer, got {n!r}", param="n")
    if not 1 <= n <= cfg.limits.max_n:
        raise ApiError(400, f"'n' must be between 1 and {cfg.limits.max_n}, got {n}", param="n")
    size = doc.get("size")
    if size is not None and size != cfg.size:
        raise ApiError(400, f"'size' {size!r} is not supported; this cascade serves {cfg.size}", param="size")
    fmt = doc.get("response_format")
    if fmt is not None and fmt != "b64_json":
        raise ApiError(400, f"'response_format' {fmt!r} is not supported; use 'b64_json'", param="response_format")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ApiError(400, f"'seed' must be an integer in [0, 2^63), got {seed!r}", param="seed")
    for name in IGNORED_STRING_FIELDS:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"'{name}' must be a string, got {type(value).__name__}", param=name)
    return GenerationRequest(prompt=prompt, n=n, seed=seed)


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_response(description: str) -> dict[str, Any]:
    return _json_response(description, {"$ref": "#/components/schemas/Error"})


def _request_schema(cfg: RouterConfig) -> dict[str, Any]:
    """The request body's schema, with this router's limits."""
    limits = cfg.limits
    return {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_chars, "pattern": r"\S"},
            "n": {"type": "integer", "minimum": 1, "maximum": limits.max_n, "nullable": True},
            # null in the enum too: in OpenAPI 3.0 an enum without it refuses null, nullable or not
            "size": {"type": "string", "enum": [cfg.size, None], "nullable": True},
            "response_format": {"type": "string", "enum": ["b64_json", None], "nullable": True},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "nullable": True},
            "model": {
                "type": "string",
                "nullable": True,
                "description": "accepted and ignored: the cascade picks the model",
            },
            "user": {"type": "string", "nullable": True},
            "quality": {"type": "string", "nullable": True},
            "style": {"type": "string", "nullable": True},
        },
    }


def _image_schema() -> dict[str, Any]:
    """One image of the response."""
    return {
        "type": "object",
        "required": ["b64_json", "model", "escalated", "degraded"],
        "properties": {
            "b64_json": {"type": "string", "description": "the PNG, base64"},
            "revised_prompt": {"type": "string", "nullable": True},
            "model": {"type": "string", "description": "the model that served this image"},
            "escalated": {"type": "boolean"},
            "degraded": {"type": "boolean"},
            "degraded_reason": {"type": "string", "nullable": True},
            "confidence": {"type": "number", "nullable": True},
            "discriminator": {"type": "string", "nullable": True},
        },
    }


def openapi_document(cfg: RouterConfig, version: str) -> dict[str, Any]:
    """The router's inference API as OpenAPI 3.0 (served at ``/openapi.json`` on the admin port).

    ``POST /v1/images/generations`` is OpenAI's images API as far as the router implements it:
    the same request fields and response shape, with the limits of this router's config, and
    per image the model that served it and whether it was escalated or degraded."""
    request = _request_schema(cfg)
    image = _image_schema()
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    }
    status_doc = {"type": "object", "additionalProperties": True}
    components: dict[str, Any] = {"schemas": {"Error": error}}
    if cfg.auth is not None:
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": f"HADIS router ({cfg.cascade})",
            "version": version,
            "description": "OpenAI-compatible image generation served by a cascade of diffusion models.",
        },
        "paths": {
            "/v1/images/generations": {
                "post": {
                    "operationId": "createImage",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": _json_response(
                            "the images",
                            {
                                "type": "object",
                                "required": ["created", "data"],
                                "properties": {
                                    "created": {"type": "integer"},
                                    "data": {"type": "array", "items": image},
                                },
                            },
                        ),
                        "400": _error_response("the request is invalid"),
                        "401": _error_response("no valid API key (when the cascade asks for keys)"),
                        "408": _error_response("the body did not arrive in time"),
                        "413": _error_response("the body is over the limit"),
                        "429": _error_response("the API key is over its quota: retry after Retry-After"),
                        "503": _error_response("overloaded or no worker ready: retry after Retry-After"),
                        "504": _error_response("no worker answered within the deadline"),
                    },
                }
            },
            "/healthz": {"get": {"operationId": "health", "responses": {"200": {"description": "the process is up"}}}},
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "responses": {
                        "200": _json_response("a request sent now would be served", status_doc),
                        "503": _json_response("no light worker is ready", status_doc),
                    },
                }
            },
        },
        "components": components,
    }
    if cfg.auth is not None:  # the probes stay open: only the images API asks for a key
        doc["paths"]["/v1/images/generations"]["post"]["security"] = [{"apiKey": []}]
    return doc
