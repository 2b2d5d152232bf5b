"""capgen-train and capgen-prepare with the timm and open_clip encoders (model/encoder=timm,
clip): a decoder trains on each one's grid with the encoder's last stage fine-tuned, and on its
features cached by capgen-prepare. Random weights and tiny towers (timm's test_vit; a CLIP ViT
three blocks deep) at 32x32, debug=fast runs of three steps. Their pieces:
unit/models/test_pretrained_encoders.py."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytest
import torch

from capgen.commands.prepare import prepare
from capgen.commands.train.features import checkpoint_encoder
from capgen.commands.train.fit import train
from capgen.data.cache import CachedFeatures
from capgen.data.encoder_weights import EncoderWeightsMismatch, weights_fingerprint
from capgen.lightning.inference import load_module
from capgen.runs.checkpoint import read_checkpoint

from helpers.runs import SIZES, checkpoint, compose_command

ENCODERS = {
    "timm": ("model/encoder=timm", "model.encoder.name=test_vit", "model.encoder.weights=null", "model.encoder.image_size=32"),
    "clip": ("model/encoder=clip", "model.encoder.weights=null", "model.encoder.image_size=32",
             "+model.encoder.vision_cfg={width:32,layers:3,head_width:16,patch_size:8}"),
}
GRID = {"timm": 2, "clip": 4}  # 32 / the patch size


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_decoder_trains_with_the_last_stage_of_the_encoder(encoder, make_cfg):
    cfg = make_cfg(*ENCODERS[encoder], "model.encoder.finetune=last", "model.encoder.finetune_last=1", "test=false")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    saved = checkpoint(run)
    assert saved["global_step"] == 3
    built = hydra.utils.instantiate(cfg.model.encoder)
    trainable = [p for p in built.parameters() if p.requires_grad]
    assert 0 < len(trainable) < len(list(built.parameters()))
    decoder_group, encoder_group = saved["optimizer_states"][0]["param_groups"]
    assert len(encoder_group["params"]) == len(trainable)  # the last stage, and only it, in the optimizer
    state = saved["optimizer_states"][0]["state"]
    assert all(state[i]["exp_avg"].abs().sum() > 0 for i in encoder_group["params"])  # gradients reached it
    module = load_module(str(run / "checkpoints" / "last.ckpt"))  # rebuilt from the checkpoint's config
    feats = module.net.encode(torch.randint(0, 256, (1, 3, 96, 96), dtype=torch.uint8))
    assert feats.shape == (1, GRID[encoder] ** 2, built.out_dim) and module.net.grid == GRID[encoder]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_capgen_prepare_caches_the_encoders_features_and_training_reads_them(encoder, tmp_path, make_cfg, caplog):
    cache = tmp_path / "cache"
    prepare(compose_command("prepare", f"cache_dir={cache}", "features=true", SIZES, *ENCODERS[encoder]))
    features = CachedFeatures(cache, "train")
    assert features.encoder["name"] == ("test_vit" if encoder == "timm" else "ViT-B-16")
    assert features.encoder["weights"] is None and features.encoder["finetune"] == "frozen"
    assert features.shape[1] == GRID[encoder] ** 2

    cfg = make_cfg(*ENCODERS[encoder], f"data.cache_dir={cache}", "data.use_features=true")
    with caplog.at_level(logging.INFO, logger="capgen.data.datamodule"):
        train(cfg)
    assert "the train split: 64 images' encoder features from the cache" in caplog.text
    assert "the test split: 16 images' encoder features from the cache" in caplog.text
    assert checkpoint(Path(cfg.paths.output_dir))["global_step"] == 3
    # Its randomly initialised encoder never ran: the checkpoint holds the weights that made the
    # features, drawn from the same seed as capgen-prepare's (capgen.commands.train.features).
    saved = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert weights_fingerprint(checkpoint_encoder(saved)) == features.encoder_weights

    # Another seed draws other weights, and the run is refused before anything is written.
    reseeded = make_cfg(*ENCODERS[encoder], f"data.cache_dir={cache}", "data.use_features=true", "seed=1", name="seed1")
    with pytest.raises(EncoderWeightsMismatch, match=r"than this run's encoder, model.encoder as built with seed=1 \(.*"
                                                     r"capgen-prepare features=true .* and seed=1, or train on images"):
        train(reseeded)
    assert list(Path(reseeded.paths.output_dir).iterdir()) == []

    other = make_cfg(*ENCODERS[encoder], "model.encoder.image_size=64", f"data.cache_dir={cache}", "data.use_features=true",
                     name="other")
    with pytest.raises(ValueError, match="they differ in image_size"):  # features of another encoder are refused
        train(other)
