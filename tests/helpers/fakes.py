"""Small stand-ins the unit tests share: a two-caption vocabulary, a trainer as callbacks see it, and
untrained checkpoints in capgen's format (written without a Trainer)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from capgen.vocab import Vocabulary


def tiny_vocab() -> Vocabulary:
    return Vocabulary.build(["a red circle", "a blue square"], max_len=3)


def fake_trainer(epoch: int, **metrics: float) -> SimpleNamespace:
    """What a callback reads of a trainer at the end of `epoch`: metrics as keyword arguments
    with the first "_" for "/" (val_CIDEr=0.5 is val/CIDEr)."""
    return SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=epoch,
                           callback_metrics={k.replace("_", "/", 1): torch.tensor(v) for k, v in metrics.items()},
                           checkpoint_callbacks=[])


CAPTIONS = ["a red circle", "a blue square", "a green triangle left of a red circle"]
ENCODER = {"_target_": "capgen.models.encoder.SmallCNN", "widths": [4, 8, 8, 8], "grid": 2}
DECODERS = {
    "lstm": {"_target_": "capgen.models.decoders.LSTMDecoder", "_partial_": True, "embed_dim": 8, "hidden_dim": 8},
    "attn": {"_target_": "capgen.models.attention.AttentionDecoder", "_partial_": True, "embed_dim": 8,
             "hidden_dim": 8, "attn_dim": 8},
}


def write_checkpoint(path: Path, decoder: str = "lstm", captions=CAPTIONS, seed: int = 0, max_len: int = 8,
                     training_data: dict | None = None) -> Path:
    """An untrained module saved as capgen-train saves one (its hook adds the vocabulary and the stamp;
    `training_data`: the record of its data, capgen.runs.provenance.record's, none as an earlier capgen)."""
    from capgen.lightning.module import CaptioningModule
    from capgen.models.captioner import build_captioner

    torch.manual_seed(seed)
    vocab = Vocabulary.build(captions, max_len=max_len)
    net_config = {"encoder": ENCODER, "decoder": DECODERS[decoder]}
    module = CaptioningModule(build_captioner(net_config, len(vocab)), vocab, net_config=net_config)
    module.training_data = training_data
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "global_step": 0}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path
