"""Which weights made a feature cache, and the check that a model's encoder has the same ones.

A feature cache (capgen.data.cache) holds what one encoder, with one set of weights, computed.
A decoder trained or scored on it runs its own encoder on new images, so its encoder must have
those very weights, or its scores are not its own: a small_cnn trained end to end and scored
on the features of capgen-prepare's random initialisation of the same config lost a third of
its CIDEr, without a word. The encoder's config (cache.encoder_identity) cannot tell: a random
initialisation, the same encoder trained, and a pretrained one all share it. So a feature
cache's index records `encoder_weights`, the fingerprint below, and every reader compares it
with the fingerprint of the model's encoder.

The fingerprint is a sha256 over the encoder's state_dict in the order of its names, and for
each tensor its name, shape and values, read in C order on the CPU: the memory format
(channels_last or not) and the device do not change it. Floating values are hashed as
bfloat16, so the same weights stored in another floating type hash alike: a run trained in
bf16-true precision keeps its encoder in bf16, rounded from the fp32 weights that made the
cache. (Weights that differ only below bf16's precision hash alike too; features they
compute differ as little.) It covers every parameter and
persistent buffer (BatchNorm's running statistics and counts); not the non-persistent buffers
(the input normalisation's constants, which the config sets), nor the precision the encoder
computes in (recorded apart, as encoder_precision). Hashing runs at about 1 GB/s of weights,
once per command: nothing next to extracting features.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn


def weights_fingerprint(state: Mapping[str, torch.Tensor] | nn.Module) -> str:
    """The sha256 (hex) of a state_dict, or of a module's, as the module docstring says."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.bfloat16)  # see the module docstring
        tensor = tensor.contiguous()
        # The header fixes how many bytes follow, so no two state_dicts hash the same bytes.
        digest.update(json.dumps([name, "float" if tensor.is_floating_point() else str(tensor.dtype).removeprefix("torch."),
                                  list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class EncoderWeights(NamedTuple):
    """A model's encoder weights, as a feature cache is checked against them: their fingerprint,
    whose they are and what to do when a cache's are others. The command that hands them over
    says the last two: it knows the checkpoint or run and the settings that would fix it."""

    fingerprint: str
    owner: str  # e.g. "the checkpoint <path>", "this run's encoder (model.encoder built with seed=42)"
    fix: str  # one or two sentences


class EncoderWeightsMismatch(ValueError):
    """A feature cache made by the same encoder config with other weights than the model's."""

    def __init__(self, index_file: Path, target: str, made_by: str, model: EncoderWeights):
        self.index_file, self.made_by, self.model = index_file, made_by, model
        super().__init__(
            f"data.use_features=true with data.cache_dir={index_file.parent}: the features in {index_file.name} were "
            f"made by {target} with other weights than {model.owner} (the same encoder config; weights sha256 "
            f"{made_by[:12]}... there, {model.fingerprint[:12]}... in the model), so the decoder would read features "
            f"that its own encoder never computes: what it learns or scores on them does not hold for the model on "
            f"new images. {model.fix}"
        )


def weights_match(index_file: Path, target: str, made_by: str | None, model: EncoderWeights) -> bool:
    """True when the cache's weights (`made_by`, its index's encoder_weights) are the model's;
    EncoderWeightsMismatch when they are others; False for a cache written before capgen
    recorded them (accepted: nothing says it is wrong, and the caller says it was not checked)."""
    if made_by is None:
        return False
    if made_by != model.fingerprint:
        raise EncoderWeightsMismatch(index_file, target, made_by, model)
    return True
