"""Training losses of a captioner, shared by every decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy over real tokens: logits (B, T, V), targets (B, T); padding ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id)


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
