"""Every callback capgen-train runs, all listed in conf/callbacks/default.yaml:

    BestCheckpoint         the best epoch's checkpoint; its state follows a moved run folder
    LastCheckpoint         last.ckpt, the file a run resumes from
    ExactResume            random generators and the loader's place, so a resume is exact
    FlushLogsOnCheckpoint  logged points are on disk before each checkpoint
    FiniteLossGuard        a NaN/inf loss or update stops (keeping the last good weights) or is skipped
    BatchNormPolicy        BatchNorm statistics per batch or frozen, and DDP's sync checked
    BestEpochMetrics       the val/* metrics of the best epoch by the monitored metric
    CaptionSamples         generated vs reference captions and attention figures in TensorBoard
    StopOnSignal           SIGTERM / SIGUSR1: save last.ckpt at the step's end, stop, record "interrupted"
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from ..data.datamodule import Batch
from ..data.resumable import ResumableLoader
from . import compat

log = logging.getLogger(__name__)


def _random_state() -> dict[str, Any]:
    """This process's generators, as tensors and plain numbers only (so that checkpoints
    still load with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_random_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class RelocatableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved state follows the run folder when it is moved or copied.

    The state (best and k-th best file, the top-k files, the last file) names absolute paths in
    the folder the run was in. Lightning restores it only when the folder is the same, and
    otherwise forgets the top-k files but keeps `best_model_path` pointing into the old folder:
    a moved run then keeps its old best file beside a new one (save_top_k broken), and a copy
    tests and records the other copy's file. Paths inside the old checkpoint folder are
    rebased onto this one before Lightning restores them.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and os.path.normpath(old) != os.path.normpath(new):
            state_dict = _rebased(state_dict, old, new)
        super().load_state_dict(state_dict)


def _rebased(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    def move(path):
        if not path:
            return path
        rel = os.path.relpath(path, old)
        return path if rel.startswith(os.pardir) else os.path.join(new, rel)

    state = dict(state, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if "best_k_models" in state:
        state["best_k_models"] = {move(p): v for p, v in state["best_k_models"].items()}
    return state


class BestCheckpoint(RelocatableCheckpoint):
    """The best epoch by the run's monitor (Lightning's ModelCheckpoint; see RelocatableCheckpoint)."""


class LastCheckpoint(RelocatableCheckpoint):
    """last.ckpt, the checkpoint a run resumes from.

    Written at epoch ends, after validation, or every N optimizer steps
    (`every_n_train_steps=N`). In the step mode a save can fall on the last step before a
    validation (an epoch's last step), and Lightning then skips the save after that
    validation, as it already saved at that step. A run resumed from that file would start
    after the validation without having run it: that epoch's val scores, and its place in
    the best-checkpoint tracker, would be missing. So once a validation is settled at a step
    that was saved, last.ckpt is written again, now holding its results. "Settled" is when
    the best checkpoint is saved too (Lightning's rule, compat.saves_on_train_epoch_end):
    at the epoch's end for the usual once-per-epoch validation, else when validation ends.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not compat.saves_on_train_epoch_end(self, trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if compat.saves_on_train_epoch_end(self, trainer):
            self._write_again_if_saved_at_this_step(trainer)

    def _write_again_if_saved_at_this_step(self, trainer: L.Trainer) -> None:
        if (compat.every_n_train_steps(self) >= 1 and compat.last_saved_step(self) == trainer.global_step
                and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run):
            compat.save_now(self, trainer)


class ExactResume(L.Callback):
    """Saves what Lightning does not restore exactly, and puts it back on resume.

    Lightning restores weights, optimizer, scheduler, loop counters and the checkpoint
    callbacks' best-so-far. Two more things decide what an uninterrupted run does next:

    - the random generators (dropout masks). They are taken when a checkpoint is written and
      put back right before the first training batch after resuming: nothing between those
      two moments in an uninterrupted run draws from them (the training DataLoader has its
      own generator; validation decodes greedily in eval mode), so the stream continues.
      Under DDP every rank keeps its own: the ranks start from one seed, but their batches
      differ in length, so their dropout draws, and hence their generators, part ways. The
      checkpoint holds one state per rank (gathered when it is written, which every rank
      does) and each rank takes back its own.
    - where the training loader stood in its epoch, for checkpoints written mid-epoch
      (capgen.data.resumable.ResumableLoader). Lightning hands a loader its saved state only
      if the loader exists after the checkpoint is restored, which a learning-rate schedule
      sized by `estimated_stepping_batches` prevents; the state is therefore given to the
      loader here, at the start of training, before its first batch is drawn.
    """

    KEY = "capgen_exact_resume"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = [_random_state()]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, _random_state())  # rank r's at index r
        loader = trainer.train_dataloader
        checkpoint[self.KEY] = {"rng": states, "train_loader": loader.state_dict() if isinstance(loader, ResumableLoader) else None}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(self.KEY)
        if self._pending is None:
            log.warning("the checkpoint was written without the exact_resume callback: the run continues, but its "
                        "random streams and loader position start afresh")
            return
        states = self._pending["rng"]
        if len(states) != trainer.world_size:
            log.warning("resuming on %d processes from a checkpoint written by %d: each process's data shard and "
                        "random stream differ from the interrupted run's, so the run continues but not exactly "
                        "as it would have", trainer.world_size, len(states))
        self._pending["rng"] = states[trainer.global_rank % len(states)]

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        if self._pending and self._pending["train_loader"] and isinstance(loader, ResumableLoader):
            loader.load_state_dict(self._pending["train_loader"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending is None:
            return
        rng, self._pending = self._pending["rng"], None
        _set_random_state(rng)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (see FiniteLossGuard)."""


class NonFiniteWeightsError(FloatingPointError):
    """An optimizer step made the weights or the optimizer state NaN or infinite (see FiniteLossGuard)."""


_FIXES = ("Usual fixes: a lower model.module.lr, gradient clipping (trainer.gradient_clip_val, 5 by default), "
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
            fix = ("The learning rate is not finite: set a finite model.module.lr (and model.module.encoder_lr) and "
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


class BatchNormPolicy(L.Callback):
    """How the encoder's BatchNorm layers learn their statistics.

    mode="batch" (default): normalise by the batch and update the running statistics. With
    several processes each normalises by its own share of the batch, unless
    `trainer.sync_batchnorm=true` (the `ddp` trainer config) turns them into SyncBatchNorm,
    which torch implements for GPUs only; on CPU processes (`trainer=ddp_cpu`) that is refused
    at start-up. mode="frozen": BatchNorm layers stay in eval mode while training, so they
    normalise with their stored running statistics and never update them (the usual choice
    for fine-tuning a pretrained encoder with small per-process batches); their scale and
    shift still train.
    """

    def __init__(self, mode: Literal["batch", "frozen"] = "batch"):
        if mode not in ("batch", "frozen"):
            raise ValueError(f"callbacks.batchnorm.mode={mode!r}: use batch or frozen")
        self.mode = mode

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if compat.syncs_batchnorm(trainer) and trainer.world_size > 1 and trainer.strategy.root_device.type == "cpu":
            raise ValueError(
                "trainer.sync_batchnorm=true with processes on the CPU: torch's SyncBatchNorm runs on GPUs only. "
                "Set trainer.sync_batchnorm=false and either keep per-process statistics "
                "(callbacks.batchnorm.mode=batch) or freeze them (callbacks.batchnorm.mode=frozen)."
            )

    def on_train_batch_start(self, trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # Lightning switches the whole model to train mode at each epoch start and after
        # every validation; putting the layers back per batch keeps them frozen throughout.
        if self.mode == "frozen":
            for m in pl_module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()


class FlushLogsOnCheckpoint(L.Callback):
    """Flushes the loggers whenever a checkpoint is written.

    TensorBoard's writer buffers events for up to two minutes; a run killed meanwhile would
    lose points that lie before its last checkpoint, which the resumed run does not log
    again. Flushed here, the curve up to every checkpoint is on disk before the checkpoint.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


class BestEpochMetrics(L.Callback):
    """Keeps the val/* metrics of the epoch with the best `monitor` (the run's result, also in
    summary.json and TensorBoard's HPARAMS tab). Saved in checkpoints, so a resumed run still
    knows the best epoch from before the resume."""

    def __init__(self, monitor: str = "val/CIDEr", mode: Literal["max", "min"] = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"monitor_mode={mode!r}: use max or min")
        self.monitor, self.mode = monitor, mode
        self.best: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run
        # before the module's, which is where the epoch's scores are logged.
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        best = self.best.get(self.monitor)
        if best is None or (score > best if self.mode == "max" else score < best):
            self.best = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict["best"])


class CaptionSamples(L.Callback):
    """Logs, after every validation and test, the first `num_samples` images of the split's
    first batch with their generated and reference captions (a Markdown table and a figure
    each) and, for attention models, a per-word attention figure. The images are the same
    every epoch and in every run on the same data, so runs can be compared image by image.

    `pictures(split, image_ids)` gives the images when batches carry cached features instead
    of pixels; capgen.training.train hands it the datamodule's."""

    def __init__(self, num_samples: int = 4) -> None:
        self.num_samples = num_samples
        self.pictures: Callable[[str, list[int]], list[np.ndarray]] | None = None
        self._batches: dict[str, Batch] = {}

    def _keep(self, stage: str, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 0 and self.num_samples > 0:
            self._batches[stage] = Batch(*(x[: self.num_samples] for x in batch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._keep("val", batch, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._keep("test", batch, batch_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        batch = self._batches.pop(stage, None)
        if batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from .samples import log_samples  # matplotlib only where figures are drawn

        log_samples(trainer, pl_module, batch, stage, self.pictures)


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
