"""data=custom end to end: a JSONL captions file and a Karpathy-format file named "mydata" each
train (debug=fast), are cached by capgen-prepare, evaluated by capgen-eval run=<run> and
their images captioned by capgen-caption."""

import json
import math
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from capgen.commands.caption import caption_images
from capgen.commands.eval.evaluate import evaluate
from capgen.commands.prepare import prepare
from capgen.commands.train.fit import train
from capgen.config import CONF_DIR
from capgen.config.argv import with_run_data_choice
from capgen.data.cache import CachedImages
from capgen.lightning.module import CaptioningModule

from helpers.commands import run_eval
from helpers.fixtures_real import make_custom

SPLITS = ("train", "val", "test")


def _data_overrides(root: Path, form: str, facts: dict) -> list[str]:
    overrides = ["data=custom", f"data.root={root}", f"data.source.captions={facts['captions_file'].name}",
                 "data.source.image_size=32", "data.batch_size=2"]
    return overrides + (["data.source.image_dir=images"] if form == "jsonl" else [])  # Karpathy: its filepath


def _train_run(run: Path, overrides: list[str]) -> dict:
    """capgen-train as the command leaves its folder: .hydra/{config,hydra}.yaml, checkpoints/."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", *overrides, f"paths.output_dir={run}"], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg.hydra
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), run / ".hydra" / "hydra.yaml")
    return train(cfg)


@pytest.mark.parametrize("form", ["jsonl", "karpathy"])
def test_custom_data_trains_prepares_evaluates_and_captions(tmp_path, form):
    root = tmp_path / "data"
    facts = make_custom(root, form)
    data = _data_overrides(root, form, facts)
    test_ids = [facts["ids"][f] for f in facts["splits"]["test"]]

    # capgen-train
    run = tmp_path / "run"
    metrics = _train_run(run, [*data, "model.module.test.metrics=[BLEU,CIDEr]"])
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/CIDEr"])
    module = CaptioningModule.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert "zebra" not in module.vocab.stoi  # a word of val/test captions only: the vocabulary is train's

    # capgen-prepare, then a datamodule with data.cache_dir reads every split from the caches
    cache = tmp_path / "cache"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=[*data, f"cache_dir={cache}", f"paths.output_dir={tmp_path / 'prep'}"])
    assert prepare(cfg) == {s: 0 for s in SPLITS}
    with open_dict(cfg):
        cfg.data.cache_dir = str(cache)
    datamodule = hydra.utils.instantiate(cfg.data)
    for split in SPLITS:
        source = datamodule.source(split)
        assert isinstance(source, CachedImages)
        assert [source.image_id(i) for i in range(len(source))] == [facts["ids"][f] for f in facts["splits"][split]]

    # capgen-eval run=<run>: the run's own data config (data=custom), its test split
    overrides = with_run_data_choice([f"run={run}", "metrics=[BLEU,CIDEr]", "decode=greedy"])
    assert "data=custom" in overrides
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[*overrides, f"paths.output_dir={tmp_path / 'eval'}"])
    report = evaluate(cfg, overrides)
    assert report["images"] == len(test_ids) and math.isfinite(report["CIDEr"])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(test_ids)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "captions.jsonl").read_text().splitlines()]
    by_id = {facts["ids"][f]: f for f in facts["splits"]["test"]}
    assert all(r["references"] == facts["captions"][by_id[r["image_id"]]] for r in rows)

    # capgen-eval of the checkpoint copied out of its run: the data settings it records (data.root in
    # full, the splits), so the same test images, with no data= given
    lone = tmp_path / "alone" / "pets.ckpt"
    lone.parent.mkdir()
    lone.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    alone = run_eval(tmp_path / "eval-alone", f"ckpt_path={lone}", "decode=greedy")
    assert alone["images"] == len(test_ids) and alone["CIDEr"] == report["CIDEr"]

    # capgen-caption on the data set's image folder, at the run's image size
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("caption", overrides=[f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"images={root / 'images'}",
                                            "decode=greedy", "figures=false", f"paths.output_dir={tmp_path / 'caption'}"])
    captioned = caption_images(cfg)
    top_level = sorted(f for f in facts["paths"] if "/" not in f)
    assert [Path(r["path"]).name for r in captioned] == top_level and all("caption" in r for r in captioned)
