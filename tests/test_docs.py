"""The docs check: the README fits on two screens, every link in every markdown file resolves (the
file, and the heading an anchor names), and every command in the README and docs/ is run by a
test (a `<!-- tested: FILE::TEST -->` marker above its block names it) or checked here: a `make`
target exists, a `hadis` command's subcommands and options exist in its parser, a script exists."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from docs import ROOT, SHELLS, all_markdown, blocks, commands, pages, prose

LINK = re.compile(r"(?<!`)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose(page), flags=re.M)}


def test_the_readme_fits_on_two_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 100, f"README.md has {len(lines)} lines; move detail to docs/"
    assert max(len(line) for line in lines) <= 100


def test_the_readme_links_every_docs_page():
    linked = set(LINK.findall((ROOT / "README.md").read_text()))
    missing = [
        p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in {x.split("#")[0] for x in linked}
    ]
    assert not missing, f"docs pages the README does not link: {missing}"


@pytest.mark.parametrize("page", all_markdown(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # a URL: not fetched (no network), not ours to check
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def _hadis_parser() -> argparse.ArgumentParser:
    from hadis.cli import build_parser

    return build_parser()


def _check_hadis(words: list[str]) -> list[str]:
    """Problems with a documented ``hadis ...`` command: an unknown subcommand or option."""
    parser, path = _hadis_parser(), ["hadis"]
    rest = list(words[1:])
    while rest:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse lists them here
        if not subs or rest[0].startswith("-"):
            break
        names = subs[0].choices
        if rest[0] not in names:
            choices = re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", rest[0])  # a synopsis: gen staircase|spikes|maf
            if choices or rest[0].isupper() or not rest[0].isidentifier():
                break  # a positional placeholder
            return [f"{' '.join(path)}: no subcommand {rest[0]!r}"]
        parser = names[rest.pop(0)]
        path.append(parser.prog.split()[-1])
    options = {o for a in parser._actions for o in a.option_strings}
    used = {re.sub(r"=.*", "", w) for w in rest for w in re.findall(r"--[a-z][\w-]*(?:=\S*)?", w)}
    return [f"{' '.join(path)}: no option {o}" for o in sorted(used - options)]


def _check(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    if not words:
        return []
    prog = words[0]
    if prog == "make":
        missing = [t for t in words[1:] if "=" not in t and t not in _make_targets()]
        return [f"no make target {t}" for t in missing]
    if prog in ("hadis", ".venv/bin/hadis"):
        return _check_hadis(words)
    if prog in ("python", "python3", ".venv/bin/python"):
        return [] if (ROOT / words[1]).exists() else [f"no script {words[1]}"]
    return [f"{prog}: neither checked here nor marked as run by a test (<!-- tested: FILE::TEST -->)"]


def _docs_blocks():
    return [b for p in pages() for b in blocks(p) if b.lang in SHELLS]


@pytest.mark.parametrize("block", _docs_blocks(), ids=lambda b: f"{b.page.name}:{b.line}")
def test_every_documented_command_is_run_by_a_test_or_checked(block):
    if block.tested:
        file, test = block.tested
        source = (ROOT / file).read_text()
        assert re.search(rf"^def {test}\(", source, re.M), f"{file} has no test {test}"
        return
    problems = [f"{c!r}: {p}" for c in commands(block) for p in _check(c)]
    assert not problems, problems


def test_commands_in_prose_and_synopses_exist():
    """Inline `make X` and `hadis ...` spans, and the CLI synopsis blocks (docs/cli.md)."""
    problems = []
    for page in pages():
        spans = re.findall(r"`((?:make|hadis) [^`]+)`", prose(page))
        for b in blocks(page):
            if b.lang == "":  # synopses: a command, its continuation lines indented
                text = re.sub(r"\n\s+(?=[\[(-])", " ", b.text)
                spans += [line for line in text.splitlines() if line.startswith("hadis ")]
        for span in spans:
            first = span.split("#")[0].split(" | ")[0]  # a pipeline's first command is ours
            words = re.sub(r"[\[\]()|]", " ", first).split()
            if words[0] == "make":
                problems += [
                    f"{page.name}: `{span}`: no make target {t}" for t in words[1:2] if t not in _make_targets()
                ]
            else:
                problems += [f"{page.name}: `{span}`: {p}" for p in _check_hadis(words)]
    assert not problems, problems


def test_the_check_catches_what_it_should():
    assert _check("make no-such-target") == ["no make target no-such-target"]
    assert _check("hadis plan --configmap F --no-such-flag") == ["hadis plan: no option --no-such-flag"]
    assert _check("hadis frobnicate") == ["hadis: no subcommand 'frobnicate'"]
    assert _check("hadis profile run --model X --out D") == []
    assert _check("kubectl get pods")[0].startswith("kubectl: neither checked")
