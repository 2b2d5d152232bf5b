"""Training losses of a captioner, shared by every decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over real tokens: logits (B, T, V), targets (B, T); padding ignored.

    label_smoothing eps: each real token's target is 1 - eps on its word plus eps / V on every
    word (Szegedy et al. 2016), so its loss is (1 - eps) (-log p_target) + eps mean_v (-log p_v);
    padding positions still count for nothing. 0 is the plain cross-entropy."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


def token_losses(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Cross-entropy per token (B, T), 0 on padding: logits (B, T, V), targets (B, T)."""
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id, reduction="none")
    return per_token.view_as(targets)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_p (1 - sum_t alpha_tp)^2, averaged over the batch: alphas (B, T, P), mask (B, T).

    Pushes the model to look at every cell about once over the caption (Xu et al. eq. 14).
    """
    coverage = (alphas.float() * mask.unsqueeze(-1)).sum(dim=1)  # (B, P)
    return ((1.0 - coverage) ** 2).sum(dim=1).mean()
