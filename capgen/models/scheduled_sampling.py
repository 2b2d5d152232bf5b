"""Scheduled sampling (Bengio et al. 2015): while training, each input word after <start> is,
with probability p, the model's own previous word instead of the reference's, so that the
model learns to continue from its own mistakes as it must when it generates.

The model's word is drawn from its output distribution at the previous step (softmax of
the logits, no gradient through the draw), one coin per token, as in the paper. p rises
with the epoch (`sampling_probability`). At p = 0 nothing here runs: the module keeps the
decoders' teacher-forced forward (one fused pass over the caption), so training is then
bit-identical to training without this option. At p > 0 the decoder runs step by step
through the decoder protocol (capgen.models.decoders), which is slower. Shapes: B batch,
T steps, V vocabulary, P grid cells.
"""

from __future__ import annotations

import torch

from .captioner import Captioner
from .decoders import Rows, per_row
from .search.stepwise import categorical

PAD_ID = 0  # capgen.vocab.Vocabulary.pad_id


def sampling_probability(epoch: int, highest: float, start: int, ramp: int) -> float:
    """p at `epoch` (counted from 0): 0 before epoch `start`, then rising linearly to `highest`
    over `ramp` epochs (highest * (epoch - start + 1) / ramp), and `highest` from then on."""
    if highest == 0 or epoch < start:
        return 0.0
    return highest * min(1.0, (epoch - start + 1) / ramp)


def sampled_forward(net: Captioner, images: torch.Tensor, inputs: torch.Tensor, p: float, start_id: int,
                    generator: torch.Generator | None = None, rows: Rows | None = None):
    """net's forward over `inputs` (B, T) <start> words... of the images (N, ...) that `rows`
    says (None: caption b of image b), with each input after the first
    replaced, with probability p, by a word drawn from the model's previous output (never
    <pad> or <start>, which decoding never emits either: capgen.models.search). Returns
    logits (B, T, V) and alphas (B, T, P) or None, as the teacher-forced forward does.
    Positions whose reference input is padding (the caption has ended) stay padding: their
    targets are padding too, which the loss ignores."""
    decoder = net.decoder
    memory = decoder.prepare(net.encode(images))  # (N, ...) once per image
    state = per_row(decoder.init_state(memory), rows)  # (B, ...)
    B, T = inputs.shape
    tokens = inputs[:, 0]
    logits_steps, alpha_steps = [], []
    for t in range(T):
        logits, state, alpha = decoder.step(tokens, state, memory, rows)  # (B, V), ..., (B, P) or None
        logits_steps.append(logits)
        alpha_steps.append(alpha)
        if t + 1 == T:
            break
        reference = inputs[:, t + 1]
        with torch.no_grad():
            words = logits.float()
            words[:, [PAD_ID, start_id]] = -torch.inf
            own = categorical(words.softmax(-1), generator)  # (B,)
            coin = torch.rand(B, device=inputs.device, generator=generator) < p
            tokens = torch.where(coin & (reference != PAD_ID), own, reference)
    alphas = None if alpha_steps[0] is None else torch.stack(alpha_steps, dim=1)
    return torch.stack(logits_steps, dim=1), alphas
