"""A training DataLoader that Lightning can save and restore mid-epoch.

A loader without `state_dict()` / `load_state_dict()` restarts a half-finished epoch from
its first batch (Lightning warns "your dataloader is not resumable"). This loader records the epoch, how many batches it has
served and their size, and on restore tells its CyclingReferenceSampler to leave out those
images in that epoch, so a run resumed from a checkpoint saved every N steps sees exactly
the batches an uninterrupted run would have seen. Such an epoch cannot go on in batches of
another size: Lightning's own progress counts it in batches (104 batches of 8 served read
as 104 of 16, which ends the epoch 832 images early), so that is refused; an epoch-end
checkpoint takes any batch size. capgen.lightning.callbacks.ExactResume saves and restores the state
(Lightning's own restore misses it when the loader is built before the checkpoint is read).

Its iterator is created on the first `next()` rather than on `iter()`: Lightning calls
`iter()` on a resumed run before it sets the sampler's epoch, and worker processes would
otherwise draw their first indices from the wrong epoch's order.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader


class ResumableLoader(DataLoader):
    """A DataLoader over a CyclingReferenceSampler with Lightning's state_dict protocol."""

    def __iter__(self):
        return self._served_batches()

    def _served_batches(self):
        # Batches handed out in this epoch (the sized loader is never prefetched), counting those
        # a resumed epoch leaves out: a checkpoint written later in that epoch must say where the
        # epoch stands, not how far this process got, or a second resume repeats batches.
        sampler = self.sampler
        resumed = sampler.epoch == sampler.resumed_epoch
        if resumed and sampler.resumed_skip and self._resumed_batch_size != self.batch_size:
            old = self._resumed_batch_size
            raise ValueError(
                f"data.batch_size={self.batch_size}: the checkpoint this run continues from stopped in the middle of "
                f"epoch {sampler.epoch}, after {sampler.resumed_skip} training images (of this process) in batches of "
                f"{old}, and Lightning counts an epoch's progress in batches, so batches of {self.batch_size} would "
                f"skip or repeat images of that epoch. Continue it with data.batch_size={old}, or change the batch "
                f"size from a checkpoint written at the end of an epoch (without "
                f"callbacks.last_checkpoint.every_n_train_steps, last.ckpt is one)."
            )
        self._served = sampler.resumed_skip // self.batch_size if resumed else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches": getattr(self, "_served", 0), "batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # An epoch the checkpoint finished is never replayed, so its skip is never applied.
        # (Checkpoints of capgen before "batch_size" was saved: this loader's.)
        self._resumed_batch_size = state_dict.get("batch_size", self.batch_size)
        self.sampler.resume_at(state_dict["epoch"], state_dict["batches"] * self._resumed_batch_size)
