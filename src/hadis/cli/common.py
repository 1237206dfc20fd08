"""Helpers every ``hadis`` subcommand module shares (so none imports ``hadis.cli.main``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_output(text: str, out: str | None, what: str = "") -> None:
    """Write a command's result to ``--out`` (saying so on stderr) or to stdout."""
    if out:
        Path(out).write_text(text)
        print(f"wrote {what + ' to ' if what else ''}{out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v
