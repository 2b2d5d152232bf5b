"""Commands started at once in real processes each get a dated run folder of their own
(capgen.config.new_folder): `<time>`, `<time>_1`, ... Without it, two started in the same
second shared `outputs/<task>/<time>` and one's results and config were lost."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from helpers import procs
from helpers.runs import read_jsonl

pytestmark = pytest.mark.slow  # real processes, started side by side

NOW = 1_700_000_000.0
STAMP = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(NOW))


def test_two_capgen_captions_started_in_the_same_second_keep_their_own_folder_and_results(ckpt, tmp_path):
    """The QA report's case: both launched with the same launch time (capgen.config.registry
    reads it from CAPGEN_LAUNCH_TIME), each its own image."""
    images = {}
    for name, colour in (("a", "red"), ("b", "blue")):
        images[name] = tmp_path / f"{name}.jpg"
        Image.new("RGB", (64, 64), colour).save(images[name])
    env = procs.command_env({"CAPGEN_LAUNCH_TIME": str(NOW)})
    started = [procs.start([sys.executable, "-m", "capgen.cli.caption", f"ckpt_path={ckpt}", f"images={path}"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for path in images.values()]
    for proc in started:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    folders = sorted((tmp_path / "outputs" / "caption").iterdir())
    assert [f.name for f in folders] == [STAMP, f"{STAMP}_1"]
    captioned = set()
    for folder in folders:  # each its own config, captions and figures, whichever came first
        (row,) = read_jsonl(folder / "captions.jsonl")
        given = OmegaConf.load(folder / ".hydra" / "config.yaml").images
        assert row["path"] == given and Path(folder / row["png"]).is_file()
        assert sorted(p.name for p in folder.glob("*_attention.png")) == [f"{Path(given).stem}_attention.png"]
        captioned.add(given)
    assert captioned == {str(p) for p in images.values()}


RACE = """
import json, sys, time
from pathlib import Path
from capgen.config.new_folder import reserve
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))  # both processes start at this instant
got = []
while time.time() < start + 2 and len(got) < 5000:  # and race for two seconds
    got.append(str(reserve(Path(sys.argv[2]))))
print(json.dumps(got))
"""


def test_processes_racing_for_one_folder_name_never_get_the_same_folder(tmp_path):
    folder = tmp_path / "outputs" / "eval" / STAMP
    start = time.time() + 10  # past both processes' start-up
    racers = [procs.start([sys.executable, "-c", RACE, str(start), str(folder)], env=procs.command_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    got = []
    for proc in racers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        got += json.loads(out)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(str(p) for p in folder.parent.iterdir())
