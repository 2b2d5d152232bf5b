"""What a run says while it trains: one line per validation epoch (console and train.log),
and a progress bar without the logger's version fragment."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

from .. import compat
from .results import best_starts_afresh

log = logging.getLogger(__name__)


class EpochLine(L.Callback):
    """After each validation, one log line: the epoch, val/CIDEr, val/BLEU-4, val/loss (those
    the run logs), the best `monitor` so far and its epoch, and the time since the previous line.
    The best so far is kept in checkpoints, so a resumed run goes on counting from it."""

    SHOWN = ("val/CIDEr", "val/BLEU-4", "val/loss")

    def __init__(self, monitor: str = "val/CIDEr", mode: Literal["max", "min"] = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor_mode={mode!r}: use max or min")
        self.monitor, self.mode = monitor, mode
        self.best: tuple[float, int] | None = None  # (score, epoch)
        self._since = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.monotonic()
        if best_starts_afresh(trainer, self.monitor):
            self.best = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch = trainer.current_epoch
        score = metrics.get(self.monitor)
        if score is not None and math.isfinite(score) and (
                self.best is None or (score > self.best[0] if self.mode == "max" else score < self.best[0])):
            self.best = (score, epoch)
        now = time.monotonic()
        shown = [f"{k} {metrics[k]:.3f}" for k in (*self.SHOWN, self.monitor) if k in metrics]
        best = f"best {self.monitor} {self.best[0]:.3f} (epoch {self.best[1]})" if self.best else f"no {self.monitor} yet"
        log.info("epoch %d: %s; %s; %.0f s", epoch, ", ".join(dict.fromkeys(shown)), best, now - self._since)
        self._since = now

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best) if self.best else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        self.best = (float(best[0]), int(best[1])) if best else None


class _WithoutVersion:
    """The progress bar's items without Lightning's `v_num` (the logger's version, which for a
    capgen run is its name, cut to its last four letters: `v_num=ault` for "default")."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class RichBar(_WithoutVersion, RichProgressBar):
    """Lightning's rich progress bar without `v_num`."""


class TQDMBar(_WithoutVersion, TQDMProgressBar):
    """Lightning's tqdm progress bar without `v_num`."""


def progress_bar() -> ProgressBar:
    """The bar Lightning would choose (rich when installed), without `v_num`."""
    return RichBar() if compat.rich_available() else TQDMBar()
