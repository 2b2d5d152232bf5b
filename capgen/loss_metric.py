"""The validation/test loss as a DDP-safe metric that counts every image once.

Under DDP Lightning's distributed sampler pads the last batch with repeated images, and
each rank's batches hold other images than a single process's, so averaging per-batch
losses across ranks gives a different number than one process. This metric keeps, per
image, the summed token cross-entropy and the token count, gathers them from every rank,
drops repeated image ids (first occurrence kept), and returns total loss / total tokens,
summed in float64 in image-id order so that the result does not depend on how images were
split into batches or ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ImageMeanLoss(Metric):
    """update(image_ids (B,), loss_sums (B,), token_counts (B,)); compute() -> mean loss per token."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        self.add_state("loss_sums", default=[], dist_reduce_fx="cat")
        self.add_state("token_counts", default=[], dist_reduce_fx="cat")

    def update(self, image_ids: torch.Tensor, loss_sums: torch.Tensor, token_counts: torch.Tensor) -> None:
        self.image_ids.append(image_ids.long())
        self.loss_sums.append(loss_sums.double())
        self.token_counts.append(token_counts.long())

    def compute(self) -> torch.Tensor:
        ids, sums, counts = (x if isinstance(x, torch.Tensor) else torch.cat(x)
                             for x in (self.image_ids, self.loss_sums, self.token_counts))
        first = {}
        for k, i in enumerate(ids.tolist()):
            first.setdefault(i, k)
        keep = torch.tensor([first[i] for i in sorted(first)], dtype=torch.long)
        return (sums[keep].sum() / counts[keep].sum()).float()
