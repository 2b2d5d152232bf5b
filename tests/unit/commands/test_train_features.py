"""The advice capgen-train gives with a feature cache made by other encoder weights."""

from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from capgen.commands.train.features import run_encoder_weights
from capgen.data.encoder_weights import weights_fingerprint


def test_a_resume_refused_on_a_remade_cache_is_told_to_make_it_with_the_runs_seed():
    """A run trained on features, its cache made again by capgen-prepare with the default seed:
    the resume names the prepare command with the run's seed, not "resume with the settings it
    was trained with", which is what the user just did."""
    start = SimpleNamespace(state_dict={"net.encoder.w": torch.ones(2), "net.decoder.w": torch.zeros(3)},
                            path="run/checkpoints/last.ckpt")
    weights = run_encoder_weights(OmegaConf.create({"seed": 7}), None, start, None)
    assert weights.fingerprint == weights_fingerprint({"w": torch.ones(2)})  # the checkpoint's encoder only
    assert weights.owner == "the encoder of the checkpoint run/checkpoints/last.ckpt, which this run resumes"
    assert "made again with other weights since the run read it" in weights.fix
    assert "capgen-prepare features=true cache_dir=<folder> with its data and model.encoder settings and seed=7" in weights.fix
