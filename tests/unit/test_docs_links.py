"""The README and docs/ hold together: the README stays short, and every relative link in
README.md and docs/**/*.md reaches a file that exists and, with a #fragment, a heading of that
file (by GitHub's anchor rule: the heading's text lower-cased, punctuation dropped, each space
a '-', a repeated heading numbered -1, -2, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_LIMIT = 15_000  # bytes
# The package map, written alongside the package layout: links into it are checked once it exists.
MAY_BE_ABSENT = {REPO / "docs" / "architecture.md"}

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks, with code spans blanked (links in code are not links)."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (code spans keep their text, link text stays, emphasis goes)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            if dest not in MAY_BE_ABSENT:
                broken.append(f"{target}: no such file {dest}")
            continue
        if fragment and (dest.suffix != ".md" or fragment not in anchors(dest)):
            broken.append(f"{target}: no such heading in {dest.name}")
    return broken


def test_the_readme_is_at_most_15_kb():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


def test_the_anchor_rule_is_githubs():
    assert slug("The built-in data: `data=shapes`") == "the-built-in-data-datashapes"
    assert slug("A shared machine: OpenMP's waiting threads") == "a-shared-machine-openmps-waiting-threads"
    assert slug("Caches (`capgen-prepare`)") == "caches-capgen-prepare"
    assert slug("Self-critical training (SCST)") == "self-critical-training-scst"
    assert slug("Errors and the /caption API") == "errors-and-the-caption-api"
    assert slug("CIDEr_D, *new*") == "cider_d-new"


def test_a_broken_link_or_anchor_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n## Part two\n## Part two\n```\n# not a heading\n[in code](gone.md)\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#part-two) [ok](a.md#part-two-1) [ok](#b) [web](https://x.org/y) `[code](gone.md)`\n"
                    "# B\n[bad](a.md#not-a-heading) [bad](gone.md) [bad](a.md#part-two-2)\n")
    assert [b.split(":")[0] for b in broken_links(page)] == ["a.md#not-a-heading", "gone.md", "a.md#part-two-2"]


BASH_BLOCK = re.compile(r"^ {0,3}```(?:bash|sh|shell)\n(.*?)^ {0,3}```", re.M | re.S)


def brace_expanded(line: str) -> list[str]:
    """The words of a shell command line that bash would brace-expand into several arguments:
    an unquoted `{...,...}` (`data.source.sizes={train:8,val:4}` becomes three arguments);
    quoted, or with `\\` before it, it is one argument. Comments are left out."""
    found, quote, word, depth, comma = [], None, "", 0, False
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif ch == "{" and not word.endswith("\\"):
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and comma:
                found.append(word + ch)
            comma = comma and depth > 0
        elif ch == "," and depth:
            comma = True
        if ch.isspace() and not quote and not depth:
            word = ""
        else:
            word += ch
    return found


def test_the_docs_commands_pass_their_overrides_whole_through_the_shell():
    """A command copied from README.md or docs/ into bash gives each override as one argument:
    an unquoted dict value (`key={a:1,b:2}`) would be brace-expanded into several."""
    bad = [f"{path.relative_to(REPO)}: {line.strip()}" for path in markdown_files()
           for block in BASH_BLOCK.findall(path.read_text(encoding="utf-8")) for line in block.splitlines()
           if brace_expanded(line)]
    assert bad == []


def test_a_brace_expansion_is_found():
    assert brace_expanded("capgen-train data.source.sizes={train:8,val:4} seed=1") == ["data.source.sizes={train:8,val:4}"]
    assert brace_expanded("capgen-train 'data.source.sizes={train:8,val:4}' x=\"{a,b}\" y=\\{a,b\\} # z={a,b}") == []
    assert brace_expanded("capgen-train -m seed=1,2 data.source.sizes={train:8}") == []  # no comma inside: one word


def test_the_readmes_config_table_lists_every_choice_of_each_group():
    """Each row of README's Configuration table whose group is a folder of conf/ names every
    config file in it (the ones whose names start with _ are shared parts, not choices)."""
    missing = {}
    for group, choices in re.findall(r"^\| `([\w/]+)` \| (.*?) \|", (REPO / "README.md").read_text(encoding="utf-8"), re.M):
        folder = REPO / "conf" / group
        if folder.is_dir():
            named = set(re.findall(r"`([\w-]+)`", choices))
            files = {p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")}
            if files - named:
                missing[group] = sorted(files - named)
    assert missing == {}
    assert len(re.findall(r"^\| `model` \|", (REPO / "README.md").read_text(encoding="utf-8"), re.M)) == 1  # the table was read
