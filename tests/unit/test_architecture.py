"""docs/architecture.md is the map of the package: its list of every folder and module names each
one that exists, and nothing that does not."""

from __future__ import annotations

import re

from helpers.paths import REPO

MAP = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "capgen"
SECTION = "## Every folder and module"
ITEM = re.compile(r"^(?P<indent> *)- (?P<names>(`[^`]+`(, )?)+)(:|$)")


def documented(text: str) -> set[str]:
    """The paths below capgen/ that the map's list names: an item's names (`x.py`, `folder/`)
    are inside the folder of the item above it at a smaller indent."""
    paths, folders = set(), {}  # indent -> the folder an item at that indent is in
    for line in text.split(SECTION, 1)[1].splitlines():
        m = ITEM.match(line)
        if not m:
            continue
        indent = len(m.group("indent"))
        folder = max(((i, f) for i, f in folders.items() if i < indent), default=(-1, ""))[1]
        folders = {i: f for i, f in folders.items() if i < indent}
        for name in re.findall(r"`([^`]+)`", m.group("names")):
            paths.add(folder + name)
            if name.endswith("/"):
                folders[indent] = folder + name
    return paths


def actual() -> set[str]:
    """Every package folder and module of capgen/ (a package's __init__.py counts as its folder)."""
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    folders = {str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    return modules | folders


def test_the_architecture_map_names_every_folder_and_module():
    named = documented(MAP.read_text())
    assert actual() - named == set(), "add these to docs/architecture.md"
    assert {p for p in named if not (PACKAGE / p).exists()} == set(), "docs/architecture.md names what does not exist"


def test_the_map_reader_sees_nesting_and_a_missing_module():
    text = f"{SECTION}\n- `a.py`: x\n- `data/`: y\n  - `b.py`, `c.py`: z\n  - `sub/`: w\n    - `d.py`: v\n- `e.py`: u\n"
    assert documented(text) == {"a.py", "data/", "data/b.py", "data/c.py", "data/sub/", "data/sub/d.py", "e.py"}
    without_lock = "\n".join(line for line in MAP.read_text().splitlines() if not line.lstrip().startswith("- `lock.py`"))
    assert actual() - documented(without_lock) == {"runs/lock.py"}
