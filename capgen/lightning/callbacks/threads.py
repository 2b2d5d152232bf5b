"""torch's thread count follows the free cores, checked between batches."""

from __future__ import annotations

import lightning as L

from .. import threads


class FollowFreeCores(L.Callback):
    """torch's thread count follows the cores other processes leave free, checked before each
    batch of every stage (capgen.lightning.threads); nothing where OMP_NUM_THREADS fixes it."""

    def __init__(self) -> None:
        self.policy = threads.follow_free_cores()
        self._changes_before = self.policy.changes if self.policy is not None else 0  # a sweep's jobs share the policy

    @property
    def changes(self) -> int:
        """How often the thread count changed since this callback was made (for one run)."""
        return self.policy.changes - self._changes_before if self.policy is not None else 0

    def _check(self, *_) -> None:
        if self.policy is not None:
            self.policy.check()

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _check
