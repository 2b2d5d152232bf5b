"""A regular (not editable) install carries everything a command needs: the wheel holds the
package and its configs, and the configs are found from the installed package."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

from helpers import procs
from helpers.paths import REPO


def test_the_wheel_holds_every_config_and_module(tmp_path):
    # Built from a copy, so the checkout gets no build/ or egg-info folders.
    src = tmp_path / "src"
    for part in ("capgen", "conf", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy2
        copy(REPO / part, src / part, **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / part).is_dir() else {}))
    build = "from setuptools import build_meta as b; print(b.build_wheel('dist'))"
    done = procs.run([sys.executable, "-c", build], cwd=src)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = src / "dist" / done.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"capgen/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    modules = {str(p.relative_to(REPO)) for p in (REPO / "capgen").rglob("*.py")}
    assert configs and configs <= names, sorted(configs - names)
    assert modules <= names, sorted(modules - names)
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


def test_an_installed_capgen_finds_its_configs_outside_the_checkout(tmp_path):
    # The configs as the installed package capgen.conf, imported from another folder.
    probe = "from capgen.config import CONF_DIR; print(CONF_DIR)"
    done = procs.run([sys.executable, "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    conf = Path(done.stdout.strip())
    assert (conf / "train.yaml").is_file() and (conf / "model" / "attn.yaml").is_file()
