"""The module's optimiser and learning-rate schedule: `model.module.optimizer`
(OptimizerSettings) and `model.module.scheduler` (SchedulerSettings). Each setting is
documented here, once; the defaults are the config's.

    capgen-train model.module.optimizer.lr=1e-3 model.module.scheduler.name=step

`configure_optimizers` is CaptioningModule's: AdamW with its schedule, and for a run whose
objective turns self-critical (capgen.lightning.objective), the schedule over the
cross-entropy epochs followed by the constant SCST rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf

from .groups import check_ranges
from .objective import ObjectiveSettings

SCHEDULERS = ("none", "cosine", "step", "plateau")
FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel (more exist; these are tested)


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW (torch's, its betas and eps) over the network's trainable parameters in two
    groups, the decoder's and the encoder's (when model.encoder.finetune trains it).

    lr: the decoder's learning rate (the schedule's peak).
    encoder_lr: the encoder's (null: lr).
    weight_decay: AdamW's decoupled weight decay.
    """

    lr: float = 2e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        lr, encoder_lr, decay = self.lr, self.encoder_lr, self.weight_decay
        check_ranges("model.module.optimizer", (
            ("lr", lr, lr > 0 and math.isfinite(lr), "a positive number, e.g. 2e-3"),
            ("encoder_lr", encoder_lr, encoder_lr is None or (encoder_lr > 0 and math.isfinite(encoder_lr)),
             "a positive number, or null for model.module.optimizer.lr"),
            ("weight_decay", decay, decay >= 0 and math.isfinite(decay), "at least 0, e.g. 0.0"),
        ))

    def build(self, net: torch.nn.Module, mixed: bool = False) -> torch.optim.AdamW:
        """mixed: Lightning runs the step under mixed precision (16-mixed or bf16-mixed)."""
        groups = [
            {"params": [p for p in net.decoder.parameters() if p.requires_grad], "lr": self.lr},
            {"params": [p for p in net.encoder.parameters() if p.requires_grad], "lr": self.encoder_lr or self.lr},
        ]
        groups = [g for g in groups if g["params"]]
        # torch's fused AdamW updates each tensor in one pass, where the default (foreach) makes
        # a dozen passes: 8.5 against 61 ms per step for the reference decoder's 23 M parameters
        # (2-core AMD EPYC Zen 4, 2 threads). Not under Lightning's mixed precision: its plugin
        # (16-mixed and bf16-mixed alike) refuses to clip the gradients of an optimizer that
        # could unscale them inside its step, as a fused one can.
        devices = {p.device.type for g in groups for p in g["params"]}
        fused = not mixed and devices <= set(FUSED_DEVICES)
        return torch.optim.AdamW(groups, weight_decay=self.weight_decay, fused=fused or None)


@dataclass(frozen=True)
class SchedulerSettings:
    """The learning-rate schedule.

    name:
        none     the rate stays optimizer.lr
        cosine   linear warm-up over warmup_steps optimizer steps, then a cosine to zero at the
                 last step (the default)
        step     multiplied by `decay` every `step_epochs` epochs (torch's StepLR)
        plateau  multiplied by `decay` when `monitor` has not improved (in the direction `mode`)
                 for `patience` validations (torch's ReduceLROnPlateau, stepped after each
                 validation)
    warmup_steps belongs to cosine; step and plateau start at the full rate. monitor and mode
    are the run's top-level `monitor` and `monitor_mode` (the config hands them on).
    """

    name: Literal["none", "cosine", "step", "plateau"] = "cosine"
    warmup_steps: int = 100
    decay: float = 0.1
    step_epochs: int = 10
    patience: int = 2
    monitor: str = "val/CIDEr"
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        check_ranges("model.module.scheduler", (
            ("name", self.name, self.name in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, "at least 0 (0: no warm-up)"),
            ("decay", self.decay, 0 < self.decay < 1, "a factor between 0 and 1 (exclusive), e.g. 0.1"),
            ("step_epochs", self.step_epochs, self.step_epochs >= 1, "at least 1 (epochs between two cuts), e.g. 10"),
            ("patience", self.patience, self.patience >= 0, "at least 0 (validations without improvement before a cut)"),
            ("mode", self.mode, self.mode in ("max", "min"), "max or min (set the top-level monitor_mode)"),
        ))


def restored_settings_changes(saved: Mapping, now: Mapping, source: str) -> str:
    """A paragraph naming the model.module.optimizer.* and .scheduler.* settings that differ
    between `saved` (a checkpoint's, or a run's own, model.module settings) and `now`, for a run
    that continues from the checkpoint; "" when none does. Lightning loads the optimizer's
    param_groups (lr, weight decay) and the scheduler's state (base_lrs, step_size, gamma, ...)
    over what the new settings built, so a change would be recorded but not used. Refused
    rather than applied: a new schedule in the middle of an old one (cosine to none, after the
    cosine ended at lr 0) has no one right meaning; init_from= starts afresh from the weights.
    monitor and mode follow the run's top-level monitor (Lightning reads the monitor anew)."""
    changed = []
    for group in ("optimizer", "scheduler"):
        old, new = (OmegaConf.to_container(m[group], resolve=True) if isinstance(m[group], DictConfig) else m[group]
                    for m in (saved, now))
        if old is None:  # a checkpoint of a capgen that did not save them
            continue
        changed += [f"model.module.{group}.{key}={new.get(key)} (the checkpoint's: {old.get(key)})"
                    for key in sorted(set(old) | set(new)) if key not in ("monitor", "mode") and old.get(key) != new.get(key)]
    if not changed:
        return ""
    return (f"{', '.join(changed)}: the run continues from {source} with its optimizer and learning-rate schedule "
            f"restored, settings and state together, so the new value would be recorded but not used. Continue with "
            f"the checkpoint's settings, or start a new run from its weights with a new optimizer and schedule: "
            f"capgen-train init_from={source} <the new settings>.")


def lr_scheduler(optimizer: torch.optim.Optimizer, settings: SchedulerSettings, total_steps: int | None = None) -> dict | None:
    """The Lightning scheduler config of `settings` (None for "none"); `total_steps` (the
    trainer's estimated optimizer steps) sizes the cosine schedule."""
    if settings.name == "none":
        return None
    if settings.name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_epochs, gamma=settings.decay)
        return {"scheduler": scheduler, "interval": "epoch"}
    if settings.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=settings.mode, factor=settings.decay,
                                                               patience=settings.patience)
        # Lightning steps it with the monitored value after each validation; strict: a run
        # that does not log it stops with Lightning's error rather than never cutting.
        return {"scheduler": scheduler, "interval": "epoch", "monitor": settings.monitor, "strict": True}
    warmup = min(settings.warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def configure_optimizers(net: torch.nn.Module, trainer, optimizer: OptimizerSettings, scheduler: SchedulerSettings,
                         objective: ObjectiveSettings):
    """What CaptioningModule.configure_optimizers returns for `net` fitted by `trainer` (which
    the cosine schedule and SCST's size themselves by, and the others do not read)."""
    adamw = optimizer.build(net, mixed=trainer is not None and str(trainer.precision).endswith("-mixed"))
    if not objective.uses_scst:
        total = trainer.estimated_stepping_batches if scheduler.name == "cosine" else None
        config = lr_scheduler(adamw, scheduler, total)
        return adamw if config is None else {"optimizer": adamw, "lr_scheduler": config}
    # SCST: the schedule (cosine or none) spans the cross-entropy epochs only, then scst.lr holds.
    # estimated_stepping_batches loads the training data when the trainer has not yet, so the
    # batches per epoch are known after it (num_training_batches is inf until then).
    run_steps = trainer.estimated_stepping_batches
    per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    # the first self-critical step; a run that ends before it (trainer.max_steps) spans its own steps
    scst_from = total = min(objective.scst.from_epoch * per_epoch, run_steps)
    warmup = min(scheduler.warmup_steps, max(total - 1, 0))
    scst_factor = objective.scst.lr / optimizer.lr

    def factor(step: int) -> float:  # linear warm-up, then cosine to zero; SCST: constant scst.lr
        if step >= scst_from:
            return scst_factor
        if scheduler.name == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return {"optimizer": adamw, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(adamw, factor),
                                                 "interval": "step"}}


def check_scst_schedule(objective: ObjectiveSettings, scheduler: SchedulerSettings) -> None:
    """The self-critical epochs run at a constant rate, which the epoch-wise schedules would not leave alone."""
    if objective.uses_scst and scheduler.name in ("step", "plateau"):
        raise ValueError(f"model.module.scheduler.name={scheduler.name}: the self-critical epochs "
                         "(model.module.objective.name=scst) run at the constant model.module.objective.scst.lr; use "
                         "scheduler.name=cosine or none for the epochs before them")
