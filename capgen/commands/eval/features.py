"""The encoder weights a checkpoint scored on cached features (data.use_features=true) must find
in the cache (capgen.data.encoder_weights): its own, with the fix for a cache made by others.

Which fix depends on where the checkpoint's encoder weights come from. An encoder that trained
with the decoder on images (small_cnn, finetune=last or all) has weights that no capgen-prepare
run can make, since prepare builds its encoder from a config (pretrained weights, or a random
initialisation drawn from its seed=), never from a checkpoint: such a checkpoint is scored on
images. A frozen encoder, or one that never ran because its run trained on features, still has
the weights its config and seed build, so a cache made with the run's settings and seed holds
its features.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ...data.encoder_weights import EncoderWeights, weights_fingerprint
from ...lightning.module import CaptioningModule


def checkpoint_encoder_weights(module: CaptioningModule, ckpt_path: str, run_cfg: DictConfig | None) -> EncoderWeights:
    """The fingerprint of the checkpoint's encoder, whose it is and the fix (see the module docstring);
    run_cfg: the saved config of the checkpoint's run (None when unknown)."""
    encoder = module.net.encoder
    on_images = "score it on images with data.use_features=false (data.cache_dir's image cache still serves)"
    trains = any(p.requires_grad for p in encoder.parameters())
    if run_cfg is not None and trains and not run_cfg.get("data", {}).get("use_features"):
        fix = (f"Its encoder ({run_cfg.model.encoder._target_}) trained with the decoder on images, and capgen-prepare "
               f"makes features only from an encoder config, never from a checkpoint's weights: {on_images}.")
    else:
        seed = f"seed={run_cfg.seed}" if run_cfg is not None and "seed" in run_cfg else "the seed= of the checkpoint's run"
        fix = (f"Either {on_images}, or, if its encoder never trained (frozen, or its run read features), make a cache "
               f"with its weights: capgen-prepare features=true cache_dir=<folder> with its run's data and "
               f"model.encoder settings and {seed} (a random initialisation comes from the seed), then "
               f"data.cache_dir=<folder>.")
    return EncoderWeights(weights_fingerprint(encoder), f"the checkpoint {ckpt_path}", fix)
