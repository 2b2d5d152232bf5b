"""Training losses of a captioner, shared by every decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pieces import rows_per_piece


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (logits under bf16/fp16 autocast), float64 kept (float64 checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over real tokens: logits (B, T, V), targets (B, T); padding ignored.

    label_smoothing eps: each real token's target is 1 - eps on its word plus eps / V on every
    word (Szegedy et al. 2016), so its loss is (1 - eps) (-log p_target) + eps mean_v (-log p_v);
    padding positions still count for nothing. 0 is the plain cross-entropy."""
    return F.cross_entropy(_wide(logits.flatten(0, 1)), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


def word_layer_loss(words: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, pad_id: int = 0,
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """caption_loss(words(hidden), targets, ...) without the whole (B, T, V) logits: hidden
    (B, T, E) is the word layer's input. Only the real tokens go through the word layer (the
    padding's loss and gradient are zero anyway; a third of a COCO batch's positions), and on
    CPU in pieces of at most 16 MB of logits (capgen.models.pieces). On a GPU the whole logits
    at once: picking the real tokens would wait for the device at every step."""
    n = rows_per_piece(hidden.device, words.out_features * 4)  # float32 logits
    if n is None:
        return caption_loss(words(hidden), targets, pad_id, label_smoothing)
    real = targets.flatten() != pad_id  # (B T,)
    h, t = hidden.flatten(0, 1)[real], targets.flatten()[real]  # (n, E), (n,)
    total = sum(F.cross_entropy(_wide(words(hp)), tp, label_smoothing=label_smoothing, reduction="sum")
                for hp, tp in zip(h.split(n), t.split(n)))
    return total / len(t)


def token_losses(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Cross-entropy per token (B, T), 0 on padding: logits (B, T, V), targets (B, T)."""
    per_token = F.cross_entropy(_wide(logits.flatten(0, 1)), targets.flatten(), ignore_index=pad_id, reduction="none")
    return per_token.view_as(targets)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_p (1 - sum_t alpha_tp)^2, averaged over the batch: alphas (B, T, P), mask (B, T).

    Pushes the model to look at every cell about once over the caption (Xu et al. eq. 14).
    """
    coverage = (_wide(alphas) * mask.unsqueeze(-1)).sum(dim=1)  # (B, P)
    return ((1.0 - coverage) ** 2).sum(dim=1).mean()
