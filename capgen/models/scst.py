"""Self-critical sequence training (Rennie et al. 2017): the policy-gradient loss of a captioner.

For each image, `samples` captions are drawn from the model (no gradients), each is
rewarded (CIDEr-D against the image's references), and the loss raises the log-probability
of the captions that beat a baseline and lowers that of the ones that do not:

    loss = -mean over the B*n captions of  advantage * sum_t log p(w_t | w_<t, image)

with the sum over the caption's tokens, its <end> included (a caption cut at the maximum
length has none), and advantage = reward - baseline, held constant. The baseline is

    greedy  the reward of the model's greedy caption of the image (decoded with the decoder
            in eval mode, as the original SCST);
    mean    the mean reward of the image's other samples (the "new SCST" of the
            self-critical reference code), so an image's advantages sum to zero.

The log-probabilities are the sampler's own, kept with their gradients while it draws
(one pass, as the reference code does; a caption's row leaves the batch once it has ended,
so there is no work on padding). They are those of the distribution the words were drawn
from, dropout masks included: <pad> and <start> excluded, temperature 1. Sampling runs the
decoder as training does (dropout on, as the reference code samples). The image work is
done once per image: the encoder and the decoder's `prepare` (the attention's projection of
the grid) run once, and the sampler and the greedy baseline read that memory, for all n
samples of an image (capgen.models.decoders.Rows) instead of n copies.
The attention model's doubly stochastic
regulariser belongs to cross-entropy training and is not part of this loss. Shapes: B images, n samples per image,
N = B*n captions, L their width, P grid cells, D feature dims, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import nn

from . import search
from .captioner import Captioner

BASELINES = ("greedy", "mean")

# (image_ids (N,), tokens (N, L)) -> rewards (N,): capgen.metrics.cider_reward.CiderDReward
Reward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SelfCriticalStep(NamedTuple):
    loss: torch.Tensor  # () the loss to minimise, with gradients
    reward: torch.Tensor  # (B, n) of the sampled captions
    baseline: torch.Tensor  # (B, n) each sample's baseline
    advantage: torch.Tensor  # (B, n) reward - baseline
    tokens: torch.Tensor  # (N, L) the sampled captions, rows b*n .. b*n+n-1 of image b
    logprob: torch.Tensor  # (N,) their summed log-probabilities, with gradients


def check_scst_settings(samples: int, baseline: str, max_len: int | None, prefix: str = "model.module.objective.scst.") -> None:
    """Errors naming the setting, for start-up."""
    if baseline not in BASELINES:
        raise ValueError(f"{prefix}baseline={baseline!r}: use greedy (the greedy caption's reward) or mean (the mean "
                         "reward of the image's other samples)")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"{prefix}samples={samples!r}: the captions sampled per image, a whole number of at least 1 "
                         "(5 in the reference recipe)")
    if baseline == "mean" and samples < 2:
        raise ValueError(f"{prefix}samples={samples} with {prefix}baseline=mean: the mean baseline of a sample is the "
                         f"mean reward of the image's other samples, so it needs at least 2 (e.g. {prefix}samples=5), "
                         f"or use {prefix}baseline=greedy")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"{prefix}max_len={max_len!r}: the most words a sampled caption has, a whole number of at "
                         "least 1 (16 in the reference recipe), or null for the vocabulary's max_len")


def mean_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, n) -> (B, n): each sample's baseline is the mean reward of the image's n-1 others."""
    n = rewards.shape[1]
    return (rewards.sum(1, keepdim=True) - rewards) / (n - 1)


@contextmanager
def eval_mode(module: nn.Module):
    """The module and its children in eval mode inside the block, each back to its own mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def self_critical_step(
    net: Captioner,
    images: torch.Tensor,
    image_ids: torch.Tensor,
    reward: Reward,
    start_id: int,
    end_id: int,
    max_len: int,
    samples: int = 5,
    baseline: Literal["greedy", "mean"] = "mean",
) -> SelfCriticalStep:
    """One SCST loss for a batch of images (B, 3, H, W) or features (B, P, D), see the module
    docstring. The images are encoded once; the encoder gets its gradient through the
    sampler's log-probabilities. Sampling draws from torch's global generator (on the features'
    device), which a resumed run restores (capgen.lightning.callbacks.ExactResume)."""
    check_scst_settings(samples, baseline, max_len, prefix="")
    B = images.shape[0]
    feats = net.encode(images)  # (B, P, D), with gradients when the encoder trains
    memory = net.decoder.prepare(feats)  # (B, ...) with gradients, shared by the n samples of each image
    ids = image_ids.repeat_interleave(samples)  # (N,): rows b*n .. b*n+n-1 are image b
    # with gradients: the sampler's log-probabilities are the loss's
    drawn = search.sample(net.decoder, feats, max_len, start_id, end_id, n=samples, memory=memory)
    with torch.no_grad():
        rewards = reward(ids, drawn.tokens).to(feats.device, torch.float32).view(B, samples)
        if baseline == "greedy":
            with eval_mode(net.decoder):
                fixed = tuple(m.detach() for m in memory)  # the same numbers, no gradient
                greedy = search.greedy(net.decoder, feats.detach(), max_len, start_id, end_id, memory=fixed)
            baselines = reward(image_ids, greedy.tokens).to(feats.device, torch.float32).unsqueeze(1).expand(B, samples)
        else:
            baselines = mean_baseline(rewards)
        advantage = rewards - baselines
    logprob = drawn.logprob  # (N,)
    loss = -(advantage.reshape(-1) * logprob).mean()
    return SelfCriticalStep(loss, rewards, baselines, advantage, drawn.tokens.detach(), logprob)
