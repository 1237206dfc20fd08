"""What a cascade author may ask of the cluster, as the platform team sets it (the chart's
``policy`` values, given to the operator as ``HADIS_POLICY``, JSON).

A DiffusionCascade makes pods: whoever may create one may otherwise pick any image, mount any
node folder as the weight cache, tolerate any taint and point the operator at any URL. Each
rule is a list of allowed prefixes (or keys); an absent rule allows anything, an empty list
allows nothing. ``requireApiKeys: true`` refuses a cascade whose router asks for no API key.
A cascade that breaks a rule is not applied: its Ready condition says ``PolicyViolation`` and
names the rule and the field. The chart also renders the rules as a ValidatingAdmissionPolicy,
so the API server refuses such a cascade when it is applied.

Pure: a spec and a policy in, the violations out.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hadis.operator.spec import CascadeSpec

RULES = ("imagePrefixes", "hostPathRoots", "prometheusUrlPrefixes", "tolerationKeys")
FLAGS = ("requireApiKeys",)


@dataclass(frozen=True)
class Policy:
    """None: the rule is not set (anything goes); a tuple: what is allowed (empty: nothing)."""

    image_prefixes: tuple[str, ...] | None = None
    host_path_roots: tuple[str, ...] | None = None
    prometheus_url_prefixes: tuple[str, ...] | None = None
    toleration_keys: tuple[str, ...] | None = None
    require_api_keys: bool = False

    @classmethod
    def parse(cls, text: str | None) -> Policy:
        """The policy from ``HADIS_POLICY``'s JSON (absent or empty: no rule set)."""
        doc = json.loads(text) if text and text.strip() else {}
        if not isinstance(doc, dict) or set(doc) - set(RULES) - set(FLAGS):
            raise ValueError(f"HADIS_POLICY must be a JSON object with keys among {', '.join(RULES + FLAGS)}")
        if not isinstance(doc.get("requireApiKeys", False), bool):
            raise ValueError("HADIS_POLICY requireApiKeys must be true or false")

        def rule(key: str) -> tuple[str, ...] | None:
            v = doc.get(key)
            if v is None:
                return None
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"HADIS_POLICY {key} must be a list of strings")
            return tuple(v)

        return cls(*(rule(k) for k in RULES), require_api_keys=doc.get("requireApiKeys", False))


def _allowed(value: str, prefixes: Sequence[str] | None) -> bool:
    return prefixes is None or any(value.startswith(p) for p in prefixes)


def _url_allowed(url: str, prefixes: Sequence[str] | None) -> bool:
    """A URL under one of ``prefixes`` at a path boundary: ``http://p:9090`` allows
    ``http://p:9090/prom`` but not ``http://p:9090.evil.example``."""
    return prefixes is None or any(url == p or url.startswith(p.rstrip("/") + "/") for p in prefixes)


def _under(path: str, roots: Sequence[str] | None) -> bool:
    """Whether ``path`` (normalised: no ``..`` escapes a root) lies under one of ``roots``."""
    if roots is None:
        return True
    p = posixpath.normpath(path)
    return any(p == posixpath.normpath(r) or p.startswith(posixpath.normpath(r).rstrip("/") + "/") for r in roots)


def _images(spec: CascadeSpec) -> list[tuple[str, str]]:
    out = [(f"spec.models[{i}].image", m.image) for i, m in enumerate(spec.models) if m.image]
    if spec.worker_image:
        out.append(("spec.workerImage", spec.worker_image))
    if spec.router.image:
        out.append(("spec.router.image", spec.router.image))
    return out


def _tolerations(placement: Mapping[str, Any] | None) -> list[dict]:
    return list((placement or {}).get("tolerations") or [])


def violations(spec: CascadeSpec, policy: Policy) -> list[str]:
    """Each field of ``spec`` the policy does not allow, with the rule that refuses it."""
    out = []
    for field, image in _images(spec):
        if not _allowed(image, policy.image_prefixes):
            out.append(f"{field} {image!r}: policy imagePrefixes allows {list(policy.image_prefixes or ())}")
    host = ((spec.model_cache or {}).get("hostPath") or {}).get("path")
    if host is not None and not _under(str(host), policy.host_path_roots):
        out.append(
            f"spec.modelCache.hostPath.path {host!r}: policy hostPathRoots allows {list(policy.host_path_roots or ())}"
        )
    if not _url_allowed(spec.prometheus.url, policy.prometheus_url_prefixes):
        out.append(
            f"spec.prometheus.url {spec.prometheus.url!r}: policy prometheusUrlPrefixes allows "
            f"{list(policy.prometheus_url_prefixes or ())}"
        )
    if policy.require_api_keys and spec.router.auth is None:
        out.append("spec.router.auth is not set: policy requireApiKeys asks every router for API keys")
    for i, t in enumerate(_tolerations(spec.placement)):
        key = t.get("key")  # no key with operator Exists tolerates every taint
        if policy.toleration_keys is not None and (key is None or key not in policy.toleration_keys):
            out.append(
                f"spec.placement.tolerations[{i}] key {key!r}: policy tolerationKeys allows "
                f"{list(policy.toleration_keys)}"
            )
    return out
