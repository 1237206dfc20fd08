"""JSON has no infinity or NaN: write them as null."""

from __future__ import annotations

import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, scalars) with non-finite floats replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
