"""The encoder weights a run trained on cached features (data.use_features=true) must find in the
cache (capgen.data.encoder_weights): those its checkpoints will hold.

A run on features never runs its encoder: no gradient reaches it and BatchNorm never sees a
batch, so every checkpoint keeps the weights the encoder started with. Those are the weights
the decoder must be trained for, so they are what the cache is checked against:
- a new run: model.encoder as built. Pretrained weights are the same wherever they are built;
  a random initialisation (small_cnn, weights=null) is drawn from the seed, which capgen-train
  and capgen-prepare both set just before building the encoder, so the same seed= gives the
  same weights and another seed other ones;
- a resumed run (resume=, ckpt_path=): its checkpoint's, which Lightning loads over them;
- init_from=: the other run's, loaded over them.

Weights that differ are refused rather than replaced by the cache's: the cache records only
their fingerprint, not the weights, and a run whose encoder silently was not what its seed=,
init_from= or checkpoint says would be one that its own config does not rebuild. The fix is a
cache made by the run's weights, or training on images.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ...data.encoder_weights import EncoderWeights, weights_fingerprint
from ...models.captioner import Captioner
from ...runs.checkpoint import Checkpoint

ENCODER_PREFIX = "net.encoder."  # the encoder's weights in a checkpoint's state_dict


def checkpoint_encoder(ckpt: Checkpoint) -> dict:
    """The encoder's state_dict inside a checkpoint's."""
    return {k.removeprefix(ENCODER_PREFIX): v for k, v in ckpt.state_dict.items() if k.startswith(ENCODER_PREFIX)}


def run_encoder_weights(cfg: DictConfig, net: Captioner, start: Checkpoint | None, init: Checkpoint | None) -> EncoderWeights:
    """The weights the run's encoder trains with (see the module docstring), with whose they are
    and the fix, for the message that refuses a feature cache made by others."""
    on_images = "train on images with data.use_features=false (data.cache_dir's image cache still serves)"
    if start is not None:
        return EncoderWeights(
            weights_fingerprint(checkpoint_encoder(start)), f"the encoder of the checkpoint {start.path}, which this run resumes",
            f"The cache was made again with other weights since the run read it (capgen-prepare with another seed=), "
            f"or the run trained its encoder on images: make a cache with the run's weights, capgen-prepare "
            f"features=true cache_dir=<folder> with its data and model.encoder settings and seed={cfg.seed}, and "
            f"resume with data.cache_dir=<folder>; or {on_images}.",
        )
    if init is not None:
        return EncoderWeights(
            weights_fingerprint(net.encoder), f"the encoder of init_from={init.path}",
            f"Its run trained its encoder on images, or read features of other weights: give init_from= a run trained "
            f"on this cache, or {on_images}.",
        )
    return EncoderWeights(
        weights_fingerprint(net.encoder), f"this run's encoder, model.encoder as built with seed={cfg.seed}",
        f"capgen-prepare builds a randomly initialised encoder from its own seed= (42 by default), as capgen-train "
        f"does: make the cache with this run's weights, capgen-prepare features=true cache_dir=<folder> with this "
        f"run's data and model.encoder settings and seed={cfg.seed}, or {on_images}.",
    )
