"""The base of every metric that keeps one row per image and counts each image once.

Under DDP Lightning's distributed sampler pads the last batch of a rank with images that
another rank also sees, and each rank holds other images than a single process would. A
metric that averaged per batch would then depend on the number of processes. These metrics
instead keep, per image, a row of values keyed by the image id; Lightning gathers the rows
from every rank by concatenation, and `per_image()` keeps the first row of each image id, in
image-id order, so that the result does not depend on how images were split into batches or
ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class PerImageMetric(Metric):
    """Subclasses name their row fields in `FIELDS` and call `add_rows(image_ids, field=...)`."""

    full_state_update = False
    FIELDS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        for name in self.FIELDS:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def add_rows(self, image_ids: torch.Tensor, **rows: torch.Tensor) -> None:
        """image_ids (B,); each field (B, ...): row b belongs to image_ids[b]."""
        if set(rows) != set(self.FIELDS):
            raise TypeError(f"{type(self).__name__}.add_rows takes {self.FIELDS}, got {tuple(rows)}")
        self.image_ids.append(image_ids.long())
        for name, value in rows.items():
            getattr(self, name).append(value)

    def per_image(self) -> tuple[list[int], dict[str, torch.Tensor]]:
        """(image ids in ascending order, {field: its rows in that order}), each image once
        (its first row: a repeated image carries the same values)."""
        ids = _joined(self.image_ids)
        first: dict[int, int] = {}
        for row, image_id in enumerate(ids.tolist()):
            first.setdefault(image_id, row)
        order = sorted(first)
        keep = torch.tensor([first[i] for i in order], dtype=torch.long)
        return order, {name: _joined(getattr(self, name)).cpu()[keep] for name in self.FIELDS}


def _joined(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list state as one tensor (after a DDP gather Lightning has already joined it)."""
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0, dtype=torch.long)
