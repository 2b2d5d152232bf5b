"""The training-recipe settings of CaptioningModule: their ranges, and the learning-rate
schedules (model.module.scheduler):

    none     the learning rate stays model.module.lr
    cosine   linear warm-up over warmup_steps, then a cosine to zero at the last step (the default)
    step     multiplied by lr_decay every lr_step_epochs epochs (torch's StepLR)
    plateau  multiplied by lr_decay when the run's monitor (val/CIDEr by default, top-level
             `monitor` and `monitor_mode`) has not improved for lr_patience validations
             (torch's ReduceLROnPlateau, stepped after each validation)

warmup_steps belongs to the cosine schedule; step and plateau start at the full rate.
"""

from __future__ import annotations

import math

import torch

SCHEDULERS = ("none", "cosine", "step", "plateau")


def check_recipe(scheduler: str, lr_decay: float, lr_step_epochs: int, lr_patience: int, monitor_mode: str,
                 label_smoothing: float, scheduled_sampling: float, scheduled_sampling_start: int,
                 scheduled_sampling_ramp: int) -> None:
    """Each setting in range, or a one-paragraph ValueError naming it, its value and the fix
    (their types are checked against the annotations at start-up: capgen.config.checks)."""
    rules = (
        ("scheduler", scheduler, scheduler in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
        ("lr_decay", lr_decay, 0 < lr_decay < 1, "a factor between 0 and 1 (exclusive), e.g. 0.1"),
        ("lr_step_epochs", lr_step_epochs, lr_step_epochs >= 1, "at least 1 (epochs between two cuts), e.g. 10"),
        ("lr_patience", lr_patience, lr_patience >= 0, "at least 0 (validations without improvement before a cut)"),
        ("monitor_mode", monitor_mode, monitor_mode in ("max", "min"), "max or min (set the top-level monitor_mode)"),
        ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1, "in [0, 1) (0: none; 0.1 is usual)"),
        ("scheduled_sampling", scheduled_sampling, 0 <= scheduled_sampling <= 1,
         "a probability in [0, 1] (0: teacher forcing only; 0.25 is usual)"),
        ("scheduled_sampling_start", scheduled_sampling_start, scheduled_sampling_start >= 0, "at least 0 (an epoch, counted from 0)"),
        ("scheduled_sampling_ramp", scheduled_sampling_ramp, scheduled_sampling_ramp >= 1,
         "at least 1 (epochs to reach model.module.scheduled_sampling)"),
    )
    for name, value, ok, fix in rules:
        if not ok:
            raise ValueError(f"model.module.{name}={value}: must be {fix}.")


def lr_scheduler(optimizer: torch.optim.Optimizer, hp, total_steps: int | None = None) -> dict | None:
    """The Lightning scheduler config of `hp.scheduler` (None for "none"); `total_steps`
    (the trainer's estimated optimizer steps) sizes the cosine schedule."""
    if hp.scheduler == "none":
        return None
    if hp.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.lr_step_epochs, gamma=hp.lr_decay)
        return {"scheduler": scheduler, "interval": "epoch"}
    if hp.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=hp.monitor_mode, factor=hp.lr_decay,
                                                               patience=hp.lr_patience)
        # Lightning steps it with the monitored value after each validation; strict: a run
        # that does not log it stops with Lightning's error rather than never cutting.
        return {"scheduler": scheduler, "interval": "epoch", "monitor": hp.monitor, "strict": True}
    warmup = min(hp.warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}
