"""What the tests share to wait on the cluster and read a cascade: one wait helper, one status
helper. Tests wait on conditions, never on fixed sleeps (docs/testing.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 60.0, every_s: float = 0.5) -> T:
    """``check()``'s first truthy value, polled every ``every_s``; an exception counts as not yet.
    AssertionError naming ``what`` and the last value seen when ``timeout_s`` passes first."""
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        time.sleep(every_s)
    raise AssertionError(f"{what}: not reached in {timeout_s:.0f}s (last: {last})")


def cascade(kube, namespace: str, name: str) -> dict:
    """The live DiffusionCascade (``kube``: the conftest fixture's kubectl runner)."""
    return json.loads(kube("get", "dcas", name, "-n", namespace, "-o", "json"))


def status(kube, namespace: str, name: str) -> dict:
    """The cascade's status ({} before the operator writes one)."""
    return cascade(kube, namespace, name).get("status") or {}


def condition(doc: dict, type_: str) -> dict:
    """The condition of ``type_`` in a status, or in an object's status; {} when absent."""
    st = doc if "conditions" in doc else (doc.get("status") or {})
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})
