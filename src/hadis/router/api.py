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
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


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
    return GenerationRequest(prompt=prompt, n=n, seed=seed)
