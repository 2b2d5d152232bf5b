"""Settings that contradict each other or the run, checked by capgen-train at start-up before
anything is written (capgen.commands.train.fit.check_train_config). Each setting alone is in range
(its constructor checks that); together they would make a run that does not do what it says,
and finishes as if it had:

- a phase that starts after the last epoch: self-critical training (objective.name=scst from
  objective.scst.from_epoch), scheduled sampling (from objective.scheduled_sampling.start), the
  first cut of the step schedule (scheduler.step_epochs): the run would complete as a run
  without it;
- a monitor that no epoch logs: the best checkpoint, the best epoch's metrics, early
  stopping and the plateau schedule each wait for their metric; a val/* one is never
  logged when no epoch validates;
- the plateau schedule, stepped after every epoch on the monitored metric, in a run whose
  epochs do not all validate (it would stop after the first such epoch);
- a monitor judged the wrong way (monitor=val/loss with monitor_mode=max): the best checkpoint
  would be the worst epoch;
- SCST captions too short to hold one of CIDEr-D's 4-grams (its reward's 4-gram part could
  never be earned).
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ...metrics.captions import METRICS, default_metrics

# Words of a sampled caption that, with its <end>, make one 4-gram: CIDEr-D scores n-grams 1-4.
SCST_MIN_LEN = 3
# Logged metrics that are better lower; every other one (BLEU, CIDEr, ...) is better higher.
LOWER_IS_BETTER = ("val/loss", "train/loss", "train/xent")


def check_consistency(cfg: DictConfig) -> None:
    """Raise a one-paragraph ValueError for the first contradiction among cfg's settings."""
    module, trainer = cfg.model.module, cfg.trainer
    if trainer.get("fast_dev_run"):
        return  # Lightning's smoke test: a few batches, no checkpoints, no result that claims anything
    epochs = trainer.get("max_epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None
    _check_phases(module, epochs)
    _check_monitors(cfg, _unvalidated_epochs(trainer, epochs))
    max_len = module.objective.scst.max_len
    if module.objective.name == "scst" and max_len is not None and max_len < SCST_MIN_LEN:
        raise ValueError(
            f"model.module.objective.scst.max_len={max_len}: a sampled caption of at most {max_len} words and its <end> "
            f"holds no 4-gram, so CIDEr-D's 4-gram part of the reward could never be earned; give "
            f"model.module.objective.scst.max_len>={SCST_MIN_LEN} (16 in the reference recipe), or null for the "
            "vocabulary's max_len."
        )


def _recipe() -> str:
    """', set by experiment=<name>' when the run was given a recipe, for the messages."""
    if not HydraConfig.initialized():
        return ""
    name = HydraConfig.get().runtime.choices.get("experiment")
    return f" (set by the recipe experiment={name})" if name else ""


def _check_phases(module: DictConfig, epochs: int | None) -> None:
    if epochs is None:  # max_epochs null or -1: the run ends by steps or time, not at a known epoch
        return
    phases = []
    objective, sampling = module.objective, module.objective.scheduled_sampling
    if objective.name == "scst":
        phases.append(("objective.scst.from_epoch", "self-critical training (objective.name=scst)", "a cross-entropy run"))
    if sampling.probability > 0:
        phases.append(("objective.scheduled_sampling.start",
                       f"scheduled sampling (scheduled_sampling.probability={sampling.probability})", "a teacher-forced run"))
    if module.scheduler.name == "step":
        phases.append(("scheduler.step_epochs", "the first cut of the step schedule (scheduler.name=step)",
                       "a run at the constant model.module.optimizer.lr"))
    for key, what, instead in phases:
        start = OmegaConf.select(module, key)
        if start >= epochs:
            raise ValueError(
                f"model.module.{key}={start}{_recipe()} with trainer.max_epochs={epochs}: {what} would start after the "
                f"run's last epoch (epoch {epochs - 1}, counted from 0), so it would complete as {instead}. Give "
                f"trainer.max_epochs>{start}, or model.module.{key}<{epochs}."
            )


def _unvalidated_epochs(trainer: DictConfig, epochs: int | None) -> str | None:
    """Why some epochs of the run end without a validation (None: every epoch validates)."""
    limit = trainer.get("limit_val_batches", 1.0)
    if limit is not None and limit == 0:
        return "trainer.limit_val_batches=0: no epoch validates"
    every = trainer.get("check_val_every_n_epoch", 1)
    if every is None:
        return "trainer.check_val_every_n_epoch=null: validation follows steps (trainer.val_check_interval), not epochs"
    if epochs is not None and every > epochs:
        return f"trainer.check_val_every_n_epoch={every} with trainer.max_epochs={epochs}: no epoch validates"
    if every > 1:
        return f"trainer.check_val_every_n_epoch={every}: only every {every}th epoch validates"
    return None


def _check_monitors(cfg: DictConfig, unvalidated: str | None) -> None:
    """Every monitor names a metric some epoch logs; the plateau schedule gets it every epoch."""
    module = cfg.model.module
    val_metrics = list(module.val.metrics) if module.val.metrics is not None else list(default_metrics())
    if any(m not in METRICS for m in val_metrics):
        return  # CaptioningModule names the unknown ones
    logged = ["val/loss", *(f"val/{name}" for m in val_metrics for name in METRICS[m]), "train/loss", "train/xent"]
    # each monitor with the setting that says which way is better for it
    monitors = {"monitor": (cfg.monitor, "monitor_mode", cfg.monitor_mode),
                "model.module.scheduler.monitor": (module.scheduler.get("monitor"), "model.module.scheduler.mode",
                                                   module.scheduler.get("mode"))}
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and node.get("monitor") is not None:
            if name == "early_stopping" and node.get("patience") is None:
                continue  # off: it never reads its monitor
            monitors[f"callbacks.{name}.monitor"] = (node.monitor, f"callbacks.{name}.mode", node.get("mode"))
    for key, (metric, mode_key, mode) in monitors.items():
        if metric is None:
            continue
        better = "min" if metric in LOWER_IS_BETTER else "max"
        if metric in logged and mode is not None and mode != better:
            raise ValueError(
                f"{key}={metric} with {mode_key}={mode}: {'a loss is better lower' if better == 'min' else 'a score is better higher'}, "
                f"so the epoch chosen as the best (and early stopping, the plateau schedule) would be the worst. "
                f"Give monitor_mode={better} with monitor={metric}."
            )
        if metric not in logged:
            raise ValueError(
                f"{key}={metric!r}: no epoch of this run logs it, so no checkpoint could be chosen as the best. "
                f"Use one of {', '.join(logged)} (val/* scores come from model.module.val.metrics)."
            )
        if unvalidated and metric.startswith("val/") and "no epoch validates" in unvalidated:
            raise ValueError(
                f"{key}={metric}: {unvalidated}, so {metric} is never logged and nothing could be judged by it (the best "
                f"checkpoint, early stopping, the plateau schedule). Let epochs validate, or judge the run by its "
                f"training loss: monitor=train/loss monitor_mode=min."
            )
    if module.scheduler.name == "plateau" and unvalidated:
        raise ValueError(
            f"model.module.scheduler.name=plateau steps after every epoch on {module.scheduler.monitor}, and {unvalidated}, "
            f"so an epoch would end with nothing to step on. Validate every epoch (trainer.check_val_every_n_epoch=1, "
            f"trainer.limit_val_batches>0), or use model.module.scheduler.name=step or cosine."
        )
