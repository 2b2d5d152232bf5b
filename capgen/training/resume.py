"""Resuming a training run in its own folder: `capgen-train resume=<run dir>`.

Before Hydra starts, `resume_argv` turns the command line into the run's own one: the
overrides the run was started with (<run>/.hydra/overrides.yaml), then the ones given now
(so `trainer.max_epochs=20` can extend it), and `hydra.run.dir=<run>` so that Hydra writes
into the same folder instead of a new one. The run's previous .hydra/*.yaml are first copied
to .hydra/before-resume-<time>/, since Hydra rewrites them. `train()` then resumes from
<run>/checkpoints/last.ckpt (or `ckpt_path=` when given too), and each logger continues the
run's own logs (capgen.training.loggers.resume_kwargs): TensorBoard appends to the run's event
folder, telling TensorBoard to drop whatever the interrupted run logged after that checkpoint
(`purge_step`), so each curve continues without a doubled tail.

`check_resume_checkpoint` checks a checkpoint before Lightning touches it, so that resuming
from the wrong file fails with a message that names it and the fix.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from .checkpoint import Checkpoint, UnreadableCheckpoint, read_checkpoint
from .config import command_overrides
from .loggers import check_logger_packages

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

    from .config import CONF_DIR, register

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
    fallback = _newest_loadable(run / "checkpoints", net_config, exclude=last)
    if fallback is None:
        raise ValueError(
            f"resume={run}: {last} {problem}. No other checkpoint in {run / 'checkpoints'} loads and fits the run's "
            f"network either, so the run cannot be resumed; start it again without resume= "
            f"(capgen-train {' '.join(own)})."
        )
    log.warning("resume=%s: %s %s; resuming from %s, the newest checkpoint of the run that loads",
                run, last, problem, fallback)
    return fallback


def _newest_loadable(folder: Path, net_config: dict, exclude: Path) -> Path | None:
    """The checkpoint in `folder` with the most optimizer steps that loads and fits `net_config`."""
    found = []
    for path in folder.glob("*.ckpt"):
        if path == exclude:
            continue
        try:
            found.append((check_resume_checkpoint(str(path), net_config).global_step, path.stat().st_mtime, path))
        except ValueError as e:
            log.warning("resume: %s does not load either (%s)", path, e)
    return max(found)[2] if found else None


def check_run_dir(run: Path, started_by_hydra: bool = True) -> None:
    """Errors for a resume= folder that cannot be resumed; `started_by_hydra`: it must hold
    the .hydra/ record of its settings too (always, from the command line)."""
    if not run.is_dir():
        raise FileNotFoundError(
            f"resume={run}: no such folder. Give the run folder that capgen-train wrote "
            "(outputs/train/<date_time>, or a sweep's <sweep dir>/<job folder>), the one holding checkpoints/last.ckpt."
        )
    if started_by_hydra and not (run / ".hydra" / "overrides.yaml").is_file():
        raise FileNotFoundError(
            f"resume={run}: not a capgen-train run folder (no .hydra/overrides.yaml in it). Give the run folder "
            "itself, not its checkpoints/ folder; to resume from a lone checkpoint file use ckpt_path=<file> instead."
        )
    if not (run / "checkpoints" / "last.ckpt").is_file():
        raise FileNotFoundError(
            f"resume={run}: the run has no checkpoints/last.ckpt, so it stopped before its first checkpoint was "
            "written. Start it again without resume=, or give ckpt_path=<a .ckpt file> of this run."
        )


def _keep_previous_config(run: Path) -> None:
    """Copy .hydra/*.yaml aside: Hydra overwrites them when the resumed job starts."""
    keep = run / ".hydra" / f"before-resume-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    keep.mkdir(parents=True, exist_ok=True)
    for f in (run / ".hydra").glob("*.yaml"):
        shutil.copy2(f, keep / f.name)


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint a run starts from: ckpt_path, else <resume>/checkpoints/last.ckpt, else None."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    if cfg.get("resume"):
        check_run_dir(Path(cfg.resume), started_by_hydra=False)  # train(cfg) may be called without Hydra
        return str(Path(cfg.resume) / "checkpoints" / "last.ckpt")
    return None


class NetworkMismatch(ValueError):
    """A checkpoint of another network than the config builds."""

    def __init__(self, differences: list[str], message: str):
        super().__init__(message)
        self.differences = differences


def check_resume_checkpoint(path: str, net_config: dict) -> Checkpoint:
    """The checkpoint a run resumes from, checked before Lightning touches it: a capgen
    checkpoint (capgen.training.checkpoint.read_checkpoint) of the network `net_config` builds."""
    ckpt = read_checkpoint(path)
    differ = network_differences(ckpt.net_config, net_config)
    if differ:
        raise NetworkMismatch(differ,
            f"ckpt_path={path}: the checkpoint holds another network than this run builds ({'; '.join(differ[:4])}). "
            "Resume with the run's own settings (resume=<its run dir> reuses them), or give the same model=... "
            "and model.* overrides it was trained with."
        )
    return ckpt


def network_differences(saved: dict, now: dict, prefix: str = "model") -> list[str]:
    """'model.decoder._target_: checkpoint X, now Y' for each setting that differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += network_differences(a, b, f"{prefix}.{key}")
        elif a != b:
            out.append(f"{prefix}.{key}: checkpoint {a!r}, now {b!r}")
    return out
