"""capgen-train end to end on small data sets in each real on-disk format, and every
experiment config (with its data set replaced by such a fixture and no pretrained weights)."""

import math
from pathlib import Path

import pytest
import torch

from capgen.commands.train.fit import train
from capgen.lightning.module import CaptioningModule

from helpers.coco_pt import course_file
from helpers.fixtures_real import make_coco2014, make_flickr
from helpers.paths import REPO

SMALL = ["data.batch_size=2", "data.min_freq=1"]


def _coco(root: Path) -> list[str]:
    make_coco2014(root)
    return [f"data.root={root}", "data.source.image_size=48", *SMALL]


def _flickr(version: str):
    def make(root: Path) -> list[str]:
        make_flickr(root, version)
        return [f"data.root={root}", "data.source.image_size=48", *SMALL]

    return make


def _coco_pt(root: Path) -> list[str]:
    root.mkdir(parents=True)
    torch.save(course_file(), root / "coco.pt")
    return [f"data.source.path={root / 'coco.pt'}", "data.batch_size=2"]  # the file brings its vocabulary


DATA = {"coco2014": _coco, "flickr8k": _flickr("8k"), "flickr30k": _flickr("30k"), "coco_pt": _coco_pt}


@pytest.mark.parametrize("data", sorted(DATA))
def test_train_runs_end_to_end_on_each_format(make_cfg, tmp_path, data):
    overrides = DATA[data](tmp_path / "data")
    cfg = make_cfg(f"data={data}", "model=attn", *overrides)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/CIDEr"])
    module = CaptioningModule.from_checkpoint(str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"))
    if data == "coco_pt":  # the course file's own vocabulary, ids unchanged
        assert module.vocab.itos[4:] == course_file()["vocab"]["idx_to_token"][4:]


EXPERIMENT_DATA = {"sat_coco": _coco, "showtell_coco": _coco, "course_coco_pt": _coco_pt}
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_runs_fast(make_cfg, tmp_path, experiment):
    overrides = ["+trainer.fast_dev_run=1"]
    if experiment in EXPERIMENT_DATA:  # real data and pretrained weights are not on a test machine
        overrides += [*EXPERIMENT_DATA[experiment](tmp_path / "data"), "model.encoder.weights=null"]
    cfg = make_cfg(f"experiment={experiment}", *overrides)
    assert math.isfinite(train(cfg)["train/loss"])
