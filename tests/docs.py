"""The project's documentation as data: pages, their shell blocks, and the commands in them, for
the docs check (tests/test_docs.py) and for tests that run a documented command as written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELLS = ("sh", "bash", "console", "shell")
TESTED = re.compile(r"<!-- tested: (\S+?)::(\w+) -->\s*$")


def pages() -> list[Path]:
    """The README and docs/: what a reader of the project reads first."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_markdown() -> list[Path]:
    """Every markdown file the project ships (links are checked in all of them)."""
    skip = (".venv", ".cache", "build", "out", "node_modules", ".pytest_cache")
    return sorted(p for p in ROOT.rglob("*.md") if not any(part in skip for part in p.relative_to(ROOT).parts))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    tested: tuple[str, str] | None  # (test file, test function) named by a marker just above it


def blocks(page: Path) -> list[Block]:
    out, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        above = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = TESTED.search(above)
        out.append(Block(page, start + 1, m.group(1), "\n".join(body) + "\n", marker.groups() if marker else None))
        i += 1
    return out


def commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment lines dropped."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def documented(page: str, containing: str) -> str:
    """The one shell block of ``page`` (relative to the root) that contains ``containing``."""
    found = [b.text for b in blocks(ROOT / page) if b.lang in SHELLS and containing in b.text]
    assert len(found) == 1, f"{page}: {len(found)} shell blocks contain {containing!r}"
    return found[0]


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
