"""A run's hyper-parameters against its final metrics, for every logger: TensorBoard's HPARAMS
tab (capgen.lightning.tensorboard); the parameters and the final hp/* metrics of the CSV,
MLflow and W&B runs.

The final metrics are those of the run's result, the best epoch by its `monitor` (the
checkpoint that is kept and tested; capgen.lightning.callbacks.BestEpochMetrics), not of its
last epoch: `val/*` at the best epoch, `test/*` of the best checkpoint. The other loggers get
them as `hp/val/CIDEr`, `hp/test/BLEU-4`, ...: a best value under `val/CIDEr` at the last step
would add a false point to that curve.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from . import compat, tensorboard

# The config groups whose choice names a run (model=attn, model/encoder=resnet101, ...).
GROUPS = ("model", "model/encoder", "data", "trainer", "experiment")


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What a run is compared by: the config groups chosen (`group/model: attn`) and the
    command-line overrides as the run is named by them (`overrides: model=lstm,seed=1`), known when run by a Hydra app, and
    every setting of the model, data and trainer configs and the seed, nested as in the config
    (the logger flattens them to `model/decoder/hidden_dim`)."""
    params: dict[str, Any] = {}
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        params["group"] = {g: str(hydra.runtime.choices.get(g)) for g in GROUPS}
        params["overrides"] = hydra.job.override_dirname or "(none)"  # as in the run's name
    for key in ("model", "data", "trainer"):
        params[key] = _settings(OmegaConf.to_container(cfg[key], resolve=True))
    params["trainer"].pop("default_root_dir", None)  # the run folder: where, not how
    params["seed"] = cfg.seed
    return params


def _settings(node: Any) -> Any:
    """A config node without Hydra's `_partial_` flags, which say nothing about the run, and
    its `_target_` class paths, which the config groups chosen name (`group/model: attn`)."""
    if isinstance(node, dict):
        return {k: _settings(v) for k, v in node.items() if k not in ("_partial_", "_target_")}
    return node


def log_final_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float], best_step: int) -> None:
    """Write the run's hyper-parameters with its final val/test metrics (the val/* logged at
    `best_step`) to every logger (capgen.lightning.loggers.logger_runs closes them)."""
    final = {f"hp/{k}": v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    params = run_hparams(cfg)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            val = {k: v for k, v in metrics.items() if k.startswith("val/")}
            test = {k: v for k, v in metrics.items() if k.startswith("test/")}
            tensorboard.write_session(logger, params, val, best_step, test, compat.logged_step(trainer))
        else:
            logger.log_hyperparams(params)  # the others take parameters alone, and the metrics as points
            logger.log_metrics(final, step=trainer.global_step)
