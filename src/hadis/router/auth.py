"""API keys and per-key request quotas for the router, as OpenAI-compatible servers do them.

Keys come from a directory (the cascade's Secret mounted into the router pod): each file is one
key, its name the key's name (the label metrics and logs use), its content the token a client
sends as ``Authorization: Bearer <token>``. The router re-reads the directory when the Secret
changes, so keys are added and revoked without a restart.

Pure apart from ``read_keys`` (which reads the directory): the check and the token buckets are
tested without a server.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIN_TOKEN_CHARS = 16  # a shorter token is guessable: it is ignored, and the reader says so


@dataclass(frozen=True)
class KeySet:
    """The valid keys: token digest -> key name (only digests are kept, compared in constant time)."""

    by_digest: Mapping[bytes, str]
    ignored: tuple[str, ...] = ()  # names of files that hold no usable token, and why

    def name_of(self, token: str) -> str | None:
        digest, found = _digest(token), None
        for known, name in self.by_digest.items():  # every entry compared: no early exit
            if hmac.compare_digest(known, digest):
                found = name
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()


def parse_keys(files: Mapping[str, str]) -> KeySet:
    """Key name -> file content, as a Secret's data holds them; blank or short tokens are ignored."""
    by_digest: dict[bytes, str] = {}
    ignored = []
    for name in sorted(files):
        token = files[name].strip()
        if len(token) < MIN_TOKEN_CHARS:
            ignored.append(f"{name} (token shorter than {MIN_TOKEN_CHARS} characters)")
            continue
        by_digest[_digest(token)] = name
    return KeySet(by_digest, tuple(ignored))


def read_keys(directory: Path) -> KeySet:
    """The keys in a mounted Secret's directory (its ``..data`` links and hidden files skipped)."""
    files = {}
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        files[p.name] = p.read_text(encoding="utf-8", errors="replace")
    return parse_keys(files)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass
class TokenBucket:
    """``rate`` requests per second on average, up to ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may go now (and it is counted); else the seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class Quotas:
    """A token bucket per key: ``requests_per_minute`` each, shared evenly by ``routers`` replicas
    (a Service spreads a key's requests over them), at most ``burst`` at once."""

    requests_per_minute: float
    burst: int
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def retry_after(self, key: str, now: float, routers: int = 1) -> float:
        """0 when ``key`` may send a request now; else seconds to wait (for the Retry-After header)."""
        rate = self.requests_per_minute / 60.0 / max(1, routers)
        burst = max(1.0, math.floor(self.burst / max(1, routers)))
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self.buckets[key] = TokenBucket(
                rate, burst, bucket.tokens if bucket else -1.0, bucket.at if bucket else 0.0
            )
        return bucket.take(now)
