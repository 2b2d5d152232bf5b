"""Faults a run survives: a non-finite loss or update (FiniteLossGuard), and a scheduler's
signal to stop (StopOnSignal)."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from .. import compat
from .checkpoints import LastCheckpoint

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (see FiniteLossGuard)."""


class NonFiniteWeightsError(FloatingPointError):
    """An optimizer step made the weights or the optimizer state NaN or infinite (see FiniteLossGuard)."""


_FIXES = ("Usual fixes: a lower model.module.optimizer.lr, gradient clipping (trainer.gradient_clip_val, 5 by default), "
          "trainer.precision=32-true instead of 16-mixed; or skip such steps with callbacks.finite_loss.action=skip.")


class _StepUndo:
    """What one optimizer step changes (the parameters it updates and its state: Adam's
    moments and step counts), copied before each step so that a step whose result is not
    finite can be undone. The copies are made once and refilled in place each step (fused
    copies); they cost as much memory again as the weights and optimizer state."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self._layout: list[tuple[str, ...]] = []  # per parameter, its state's keys when copied
        self._kept: list[torch.Tensor] = []
        self._values: dict[int, dict[str, Any]] = {}  # non-tensor state entries, by parameter index

    def tensors(self) -> list[torch.Tensor]:
        """The parameters, then every state tensor, in a fixed order."""
        state = [v for p in self.params for v in self.optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
        return [*self.params, *state]

    @torch.no_grad()
    def keep(self) -> None:
        layout = [tuple(self.optimizer.state.get(p, {})) for p in self.params]
        tensors = self.tensors()
        if layout != self._layout:  # the first step creates the optimizer's state
            self._layout, self._kept = layout, [t.detach().clone() for t in tensors]
        else:
            _copy(self._kept, tensors)
        self._values = {i: {k: v for k, v in self.optimizer.state[p].items() if not torch.is_tensor(v)}
                        for i, p in enumerate(self.params) if p in self.optimizer.state}

    @torch.no_grad()
    def undo(self) -> None:
        for i, (p, keys) in enumerate(zip(self.params, self._layout)):
            if not keys:
                self.optimizer.state.pop(p, None)  # state this step created
                continue
            state = self.optimizer.state[p]
            for k in set(state) - set(keys):
                del state[k]
            state.update(self._values.get(i, {}))
        _copy(self.tensors(), self._kept)


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """targets[i].copy_(sources[i]) for every i, fused per device and dtype: a list that mixes
    them (Adam keeps its step counts on the CPU) would fall back to one copy per tensor."""
    groups: dict[tuple, tuple[list, list]] = {}
    for target, source in zip(targets, sources):
        pair = groups.setdefault((target.device, target.dtype), ([], []))
        pair[0].append(target)
        pair[1].append(source)
    for group_targets, group_sources in groups.values():
        torch._foreach_copy_(group_targets, group_sources)


def _non_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether any element of `tensors` is NaN or infinite, with one device sync.

    A NaN or inf element makes the total 2-norm NaN or inf (the norm clip_grad_norm_ fuses
    per device and dtype, the cheapest reduction here), so a finite norm proves every
    element finite. An infinite one may also be an overflow of finite values, so it is
    confirmed element by element, on that rare path only."""
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    if not floats or bool(torch.isfinite(torch.nn.utils.get_total_norm(floats, 2.0))):
        return False
    return not all(bool(torch.isfinite(t).all()) for t in floats)


class FiniteLossGuard(L.Callback):
    """Stops (action="stop", the default) or skips (action="skip") a step whose loss is
    NaN/inf, or whose update makes the weights or the optimizer state NaN/inf.

    The loss is checked before the backward pass, so the weights are still those of the
    last good step (BatchNorm statistics, which the bad forward pass moved, are put back
    too). The update is checked right after each optimizer step (a NaN learning rate, an
    overflow, a NaN gradient can each spoil the weights while the loss that led there was
    finite): the parameters and optimizer state are copied before the step, and a step
    whose result is not all finite is undone from that copy. So every state the guard keeps
    has been checked finite: at the start of training, and after every step since.

    "stop" saves the last good state with the optimizer's to
    `<checkpoints>/last-good-step<N>.ckpt` (N optimizer steps done) and raises
    NonFiniteLossError or NonFiniteWeightsError naming the step, that file and what to
    change; last.ckpt and the best checkpoint are left as they were. "skip" lets a bad
    loss's backward pass run but drops every gradient before the optimizer step, and undoes
    a bad update, so neither the weights nor the optimizer's moments change (the
    learning-rate schedule still advances); it logs a warning per skipped step. Under DDP the
    ranks agree first (any rank's bad loss counts for all), so they stop or skip together
    instead of hanging.

    Cost per step: one fused copy and one fused finiteness check of the weights and the
    optimizer state, and a device sync; the copy takes as much memory again as they do
    (about 1% of a default shapes step on a CPU: docs/reliability.md).

    Under fp16 mixed precision Lightning's gradient scaler handles overflowing *gradients*
    itself (it skips that step and lowers the scale, and the optimizer step, copy and check
    do not run); the loss is computed in float32, so an overflow there does not trip this guard.
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop"):
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.finite_loss.action={action!r}: use stop or skip")
        self.action = action
        self.skipped = 0
        self._drop_gradients = False
        self._buffers: dict[str, torch.Tensor] = {}
        self._hooks: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Optimizers exist and a resumed run's checkpoint is restored by now.
        for optimizer in trainer.optimizers:
            undo = _StepUndo(optimizer)
            self._hooks += [optimizer.register_step_pre_hook(lambda *_, u=undo: u.keep()),
                            optimizer.register_step_post_hook(lambda *_, u=undo: self._check_update(trainer, pl_module, u))]
            if _non_finite([*undo.tensors(), *pl_module.buffers()]):
                raise NonFiniteWeightsError(
                    f"the weights or optimizer state are already NaN/inf when training starts (from "
                    f"{trainer.ckpt_path or 'the model as built'}): there is no good state to train from. Resume from a "
                    "checkpoint written before the fault (ckpt_path=...), or start the run afresh."
                )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_train_batch_start(self, trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # The forward pass updates BatchNorm's running statistics before the loss is known;
        # kept here (a few small tensors) so a bad batch leaves no trace in them either.
        self._buffers = {name: b.detach().clone() for name, b in pl_module.named_buffers()}

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        if self.action == "skip":
            self._drop_gradients = True  # and the statistics restored, once backward no longer needs them
            self._skip(trainer, f"non-finite training loss ({loss.item()})")
            return
        self._restore_buffers(pl_module)
        kept = self._save_last_good(trainer)
        raise NonFiniteLossError(
            f"the training loss is {loss.item()} at step {trainer.global_step} ({self._where(trainer)}); the run "
            f"stopped before this step changed any weight. The weights and optimizer state of the last good step are "
            f"in {kept}; the checkpoints written before it are unchanged. {_FIXES}"
        )

    def on_before_optimizer_step(self, trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._drop_gradients:
            for p in pl_module.parameters():
                p.grad = None  # optimizers leave parameters without a gradient untouched
            self._restore_buffers(pl_module)
            self._drop_gradients = False

    def _check_update(self, trainer: L.Trainer, pl_module: L.LightningModule, undo: _StepUndo) -> None:
        """Right after an optimizer step, before Lightning counts it: global_step is still the
        number of steps whose updates the kept copy holds."""
        bad = _non_finite([*undo.tensors(), *pl_module.buffers()])
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        lrs = [group["lr"] for group in undo.optimizer.param_groups]
        undo.undo()
        self._restore_buffers(pl_module)
        if self.action == "skip":
            self._skip(trainer, f"non-finite weights or optimizer state after the update (learning rates {lrs})")
            return
        kept = self._save_last_good(trainer)
        if all(math.isfinite(lr) for lr in lrs):
            fix = _FIXES
        else:
            fix = ("The learning rate is not finite: set a finite model.module.optimizer.lr (and model.module.optimizer.encoder_lr) and "
                   "start the run again; the optimizer saved in that file keeps the learning rate it was given.")
        raise NonFiniteWeightsError(
            f"optimizer step {trainer.global_step} ({self._where(trainer)}) made the weights or the optimizer state "
            f"NaN/inf, with learning rates {lrs}; the run stopped and undid that step. The weights and optimizer state "
            f"of the last good step (all finite) are in {kept}; the checkpoints written before it are unchanged. {fix}"
        )

    def _skip(self, trainer: L.Trainer, what: str) -> None:
        self.skipped += 1
        log.warning("%s at step %d (epoch %d): step skipped (%d so far)", what, trainer.global_step,
                    trainer.current_epoch, self.skipped)

    @staticmethod
    def _where(trainer: L.Trainer) -> str:
        return f"epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}"

    @staticmethod
    def _save_last_good(trainer: L.Trainer) -> Path:
        folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else Path(trainer.default_root_dir)
        kept = folder / f"last-good-step{trainer.global_step}.ckpt"
        trainer.save_checkpoint(kept)
        return kept

    def _restore_buffers(self, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            for name, b in pl_module.named_buffers():
                b.copy_(self._buffers[name])


class RunInterrupted(SystemExit):
    """The run stopped on a signal after saving last.ckpt (see StopOnSignal). A SystemExit, so
    that a sweep stops with it too, as the machine it runs on is going away."""

    def __init__(self, signum: int, saved: bool):
        super().__init__(128 + signum)  # the shell's code for "ended by signal signum"
        self.signum, self.saved = signum, saved


class StopOnSignal(L.Callback):
    """SIGTERM (what SLURM and most schedulers send before they stop a job) and SIGUSR1 (sent
    ahead of a time limit with `sbatch --signal=USR1@<s>`) stop training at the next step
    boundary: last.ckpt is written exactly as a step checkpoint (`every_n_train_steps`) is,
    then, before the next batch, RunInterrupted ends the run (a validation due at that step
    runs first, and an epoch's end writes last.ckpt again as usual), which is recorded as interrupted (summary.json) and
    continues exactly with `capgen-train resume=<run>`.

    A signal during a validation outside training is acted on by Lightning (it stops the
    loop); the run is then recorded as interrupted with the last.ckpt it already had. Under
    DDP the ranks agree first, so they save and stop at the same step. Where Lightning runs
    inside SLURM with auto-requeue, SIGUSR1 is left to Lightning (it saves and requeues).
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.received: int | None = None
        self._saved: bool | None = None  # set once last.ckpt is written for the stop
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        slurm_requeue = compat.slurm_requeues(trainer)
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or (name == "SIGUSR1" and slurm_requeue):
                continue
            self._previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum: int, frame) -> None:
        log.warning("received %s: saving last.ckpt at the end of this step, then stopping", signal.Signals(signum).name)
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._saved is not None or not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        # Saved where a step checkpoint is saved, so resuming from it is as exact; the stop
        # itself waits for the next batch, so this step's logged points are written first.
        last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
        if last is not None:
            compat.save_now(last, trainer)
        self._saved = last is not None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._saved is not None:
            raise RunInterrupted(self.received or signal.SIGTERM, saved=self._saved)

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
