"""The data code across processes: a killed image-cache write resumes from its last flush,
the capgen-prepare command writes the caches, and a shapes scene is the same in a process
with another hash seed (the rest of the caches and of shapes: unit/data/test_cache.py, test_shapes.py)."""

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from capgen.commands.prepare import SPLITS
from capgen.data.cache import CachedImages, describe_source, write_image_cache
from capgen.data.shapes import ShapesSource

from helpers import procs
from helpers.paths import REPO


def test_killed_image_cache_resumes_from_its_last_flush(tmp_path):
    """A hard kill runs no cleanup: the progress record written every flush_every rows is all
    that is left, and the re-run starts there."""
    code = (
        "import functools, os, sys\n"
        "from capgen.data.cache import describe_source, write_image_cache\n"
        "from capgen.data.shapes import ShapesSource\n"
        "class Killed(ShapesSource):\n"
        "    def image(self, i):\n"
        "        if i == 10: os._exit(9)\n"
        "        return super().image(i)\n"
        "f = functools.partial(Killed, sizes={'train': 40}, image_size=32)\n"
        "src = f(split='train')\n"
        "write_image_cache(src, sys.argv[1], 'train', describe_source(f, 'train', src), flush_every=4)\n"
    )
    proc = procs.run([sys.executable, "-c", code, str(tmp_path)], timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert json.loads((tmp_path / "images_train.u8.progress.json").read_text())["rows_done"] == 8
    assert not (tmp_path / "images_train.u8").exists() and not (tmp_path / "images_train.json").exists()

    factory = functools.partial(ShapesSource, sizes={"train": 40}, image_size=32)
    src = factory(split="train")
    write_image_cache(src, tmp_path, "train", describe_source(factory, "train", src))
    cached = CachedImages(tmp_path, "train")
    assert all(cached.image(i).tobytes() == src.image(i).tobytes() for i in range(40))
    assert not (tmp_path / "images_train.u8.progress.json").exists()


def test_capgen_prepare_command_writes_the_caches(tmp_path):
    proc = procs.run([str(Path(sys.executable).with_name("capgen-prepare")), "data=shapes", f"cache_dir={tmp_path / 'cache'}",
                      "data.source.sizes={train:16,val:8,test:8}", "+data.source.image_size=32",
                      f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=procs.command_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name for p in (tmp_path / "cache").iterdir()}
    assert names == {"vocab.json"} | {f"images_{s}{ext}" for s in SPLITS for ext in (".u8", ".json")}
    assert len(CachedImages(tmp_path / "cache", "test")) == 8


def test_ctrl_c_in_capgen_prepare_ends_in_one_line_and_leaves_the_rows_to_continue_from(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while the train split's
    rows are written: exit status 130, one line saying the same command continues, no traceback."""
    cache = tmp_path / "cache"
    proc = procs.start([str(Path(sys.executable).with_name("capgen-prepare")), "data=shapes", f"cache_dir={cache}",
                        "data.source.sizes={train:8000,val:8,test:8}",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                       env=procs.command_env({"HYDRA_FULL_ERROR": "0"}),  # "1" keeps the traceback, as for any error
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        progress = cache / "images_train.u8.progress.json"
        deadline = time.monotonic() + 120
        while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert progress.exists(), proc.communicate(timeout=60)[1][-3000:] if proc.poll() is not None else "no progress record"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        procs.end(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "capgen-prepare: interrupted (Ctrl-C). The same command continues the caches" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert json.loads(progress.read_text())["rows_done"] >= 0 and not (cache / "images_train.u8").exists()


def test_same_scene_and_pixels_in_another_process():
    code = (
        "import hashlib; from capgen.data.shapes import ShapesSource;"
        "s = ShapesSource('test', seed=11);"
        "print(hashlib.sha1(repr([s.scene(i) for i in (9, 2)]).encode() + s.image(9).tobytes()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    out = procs.run([sys.executable, "-c", code], env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    s = ShapesSource("test", seed=11)
    local = hashlib.sha1(repr([s.scene(i) for i in (9, 2)]).encode() + s.image(9).tobytes()).hexdigest()
    assert out.stdout.strip() == local
