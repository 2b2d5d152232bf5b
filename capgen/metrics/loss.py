"""The validation/test loss as a DDP-safe metric that counts every image once.

Per image it keeps the summed token cross-entropy and the token count (see
capgen.metrics.per_image for why per image), and returns total loss / total tokens, summed
in float64 in image-id order.
"""

from __future__ import annotations

import torch

from .per_image import PerImageMetric


class ImageMeanLoss(PerImageMetric):
    """update(image_ids (B,), loss_sums (B,), token_counts (B,)); compute() -> mean loss per token."""

    FIELDS = ("loss_sums", "token_counts")

    def update(self, image_ids: torch.Tensor, loss_sums: torch.Tensor, token_counts: torch.Tensor) -> None:
        self.add_rows(image_ids, loss_sums=loss_sums.double(), token_counts=token_counts.long())

    def compute(self) -> torch.Tensor:
        _, rows = self.per_image()
        return (rows["loss_sums"].sum() / rows["token_counts"].sum()).float()
