"""`capgen-train resume=<run dir>` on the command line, before Hydra starts.

`resume_argv` turns the command line into the run's own one: the overrides the run was
started with (<run>/.hydra/overrides.yaml), then the ones given now (so
`trainer.max_epochs=20` can extend it), and `hydra.run.dir=<run>` so that Hydra writes into
the same folder instead of a new one. Before a byte is written, the resumed run's config is
composed and its checkpoint checked against it (`check_resume`, capgen.runs.resume); then the
run's previous .hydra/*.yaml are copied to .hydra/before-resume-<time>/, since Hydra rewrites
them. `train()` then resumes from <run>/checkpoints/last.ckpt (or `ckpt_path=`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ..lightning.loggers import check_logger_packages
from ..runs.checkpoint import UnreadableCheckpoint
from ..runs.resume import NetworkMismatch, check_resume_checkpoint, check_run_dir, newest_loadable
from .argv import command_overrides

log = logging.getLogger(__name__)

# Lightning's DDP launcher re-runs the command for ranks > 0 with this job name added (see
# lightning.fabric.strategies.launchers.subprocess_script): that command is already rewritten.
DDP_CHILD = "hydra.job.name=train_ddp_process_"


def resume_argv(args: list[str]) -> list[str]:
    """`args` (sys.argv[1:]) rewritten for `resume=<run dir>` as the module docstring says."""
    overrides = command_overrides(args)
    given = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(overrides)}
    if "resume" not in given or given["resume"].value() in (None, "null") or any(a.startswith(DDP_CHILD) for a in args):
        return args
    run = Path(str(given["resume"].value())).expanduser().absolute()
    if "-m" in args or "--multirun" in args:
        raise ValueError(
            f"resume={run} with -m: resume= continues one run. To continue a sweep, resume each of its job "
            "folders: capgen-train resume=<sweep dir>/<job folder>."
        )
    check_run_dir(run)
    saved = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
    own = [o.input_line for o in OverridesParser.create().parse_overrides(saved)
           if o.key_or_group not in ("resume", "ckpt_path") and not o.key_or_group.startswith("hydra.")]
    # Everything is checked before the first byte is written into the run: a refused resume
    # leaves the folder as it was, so the plain `resume=<run>` still works afterwards.
    fallback = check_resume(run, own, overrides)
    if os.environ.get("RANK", "0") == "0":
        _keep_previous_config(run)
    extra = [f'ckpt_path="{fallback}"'] if fallback else []
    return [*own, *args, *extra, f'hydra.run.dir="{run}"']


def check_resume(run: Path, own: list[str], given: list[str]) -> Path | None:
    """Compose the resumed run's config (its own overrides, then `given`) and check the
    checkpoint it resumes from against it. Raises, naming the override and the command that
    works, when the resume cannot go on; returns the checkpoint to resume from instead of a
    damaged last.ckpt (the newest of the run's other checkpoints that loads), else None."""
    cfg = _compose(own, given)
    check_logger_packages(cfg.get("logger"))  # the run's logger=mlflow on a machine without mlflow
    net_config = _net_config(cfg)
    last = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else run / "checkpoints" / "last.ckpt"
    plain = f"capgen-train resume={run}"
    try:
        check_resume_checkpoint(str(last), net_config)
        return None
    except NetworkMismatch as e:
        if cfg.get("ckpt_path") or _net_config(_compose(own, [])) != net_config:
            changed = [o for o in given if not o.startswith(("resume=", "hydra."))]
            raise ValueError(
                f"resume={run}: {' '.join(changed) or 'the settings given'} would build another network than the "
                f"run trained ({'; '.join(e.differences[:4])}), so it cannot continue from {last}. Nothing in the run "
                f"folder was changed. Resume with the run's own network: {plain} (other settings such as "
                "trainer.max_epochs=... may be added), or start a new run with the new settings."
            ) from None
        # The run's own settings do not build last.ckpt's network: the file is another run's (copied
        # or moved in), and `capgen-train resume=<run>` would fail again. As for a damaged one:
        problem = f"holds another network than this run trained, another run's file? ({'; '.join(e.differences[:4])})"
        return _fallback(run, last, net_config, own, problem)
    except UnreadableCheckpoint as e:
        if cfg.get("ckpt_path"):
            raise
        return _fallback(run, last, net_config, own, f"is damaged ({e})")


def _compose(own: list[str], given: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from . import CONF_DIR, register

    register()
    # Hydra's own settings (hydra.run.dir, hydra/launcher=...) do not change what is trained.
    overrides = [o for o in [*own, *given] if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _net_config(cfg: DictConfig) -> dict:
    net_config = OmegaConf.to_container(cfg.model, resolve=True)
    net_config.pop("module")
    return net_config


def _fallback(run: Path, last: Path, net_config: dict, own: list[str], problem: str) -> Path:
    """The newest of the run's other checkpoints that loads and fits, instead of `last` (`problem`: what is wrong with it)."""
    fallback = newest_loadable(run / "checkpoints", net_config, exclude=last)
    if fallback is None:
        raise ValueError(
            f"resume={run}: {last} {problem}. No other checkpoint in {run / 'checkpoints'} loads and fits the run's "
            f"network either, so the run cannot be resumed; start it again without resume= "
            f"(capgen-train {' '.join(own)})."
        )
    log.warning("resume=%s: %s %s; resuming from %s, the newest checkpoint of the run that loads",
                run, last, problem, fallback)
    return fallback


def _keep_previous_config(run: Path) -> None:
    """Copy .hydra/*.yaml aside: Hydra overwrites them when the resumed job starts."""
    keep = run / ".hydra" / f"before-resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    keep.mkdir(parents=True, exist_ok=True)
    for f in (run / ".hydra").glob("*.yaml"):
        shutil.copy2(f, keep / f.name)
