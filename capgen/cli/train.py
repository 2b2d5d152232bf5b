"""capgen-train: build data, network and module from the Hydra config, fit, then test."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from .. import resolvers
from ..extras import require_plugins
from ..hparams import BestEpochMetrics, log_final_hparams
from ..module import build_net
from ..resume import DDP_CHILD, logger_kwargs, read_resume_checkpoint, resume_argv, resume_checkpoint
from ..run_dir import run_recording_failure, write_summary
from .argv import quote_paths

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
resolvers.register()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) as configured; returns the final logged metrics."""
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)

    net_config = OmegaConf.to_container(cfg.model, resolve=True)
    net_config.pop("module")
    ckpt_path = resume_checkpoint(cfg)
    # Checked before anything is built; resuming keeps the checkpoint's word ids.
    start = read_resume_checkpoint(ckpt_path, net_config) if ckpt_path else None
    datamodule = hydra.utils.instantiate(cfg.data, vocab=start.vocab if start else None)
    vocab = datamodule.vocab
    vocab.save(out / "vocab.json")
    log.info("vocabulary: %d words, captions up to %d words", len(vocab), vocab.max_len)

    net = build_net(net_config, vocab)
    if cfg.get("compile"):
        net.use_torch_compile()
    # _recursive_=False: net_config holds _target_ nodes that must stay a config, not objects.
    module = hydra.utils.instantiate(cfg.model.module, net=net, vocab=vocab, net_config=net_config, _recursive_=False)

    callbacks = [hydra.utils.instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [hydra.utils.instantiate(c, **logger_kwargs(c, start)) for c in cfg.get("logger", {}).values()]
    best_epoch = BestEpochMetrics()
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[*callbacks, best_epoch], logger=loggers)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    # The run's result is its best epoch (the checkpoint kept and tested), not its last.
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()} | best_epoch.best
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor == "val/CIDEr"), "")
    if cfg.test:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(results[0] if results else {})
    log_final_hparams(trainer, cfg, metrics)
    if trainer.is_global_zero:
        write_summary(out, metrics, best)
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    metrics = run_recording_failure(train, cfg)
    # The value a Hydra sweeper optimises: the best epoch's.
    return metrics.get("val/CIDEr")


def main() -> None:
    sys.argv[1:] = quote_paths(sys.argv[1:], ("resume", "ckpt_path"))  # see capgen.cli.argv
    if not any(a.startswith(DDP_CHILD) for a in sys.argv[1:]):  # the launching process, not a DDP child
        os.environ[resolvers.LAUNCH_TIME_ENV] = str(time.time())
    require_plugins(sys.argv[1:])
    sys.argv[1:] = resume_argv(sys.argv[1:])  # resume=<run dir>: that run's settings and folder
    _main()


if __name__ == "__main__":
    main()
