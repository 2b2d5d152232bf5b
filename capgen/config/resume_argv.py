"""`capgen-train resume=<run dir>` on the command line, before Hydra starts.

`resume_argv` turns the command line into the run's own one: the overrides the run was
started with (<run>/.hydra/overrides.yaml), then the ones given now (so
`trainer.max_epochs=20` can extend it; a `+key=` the run added is given again without its
`+`), and `hydra.run.dir=<run>` so that Hydra writes into the same folder instead of a new one. Before a byte is written, the resumed run's config is
composed, its values checked as capgen-train checks a new run's, and its checkpoint checked
against it (`check_resume`, capgen.runs.resume); then the run's previous .hydra/*.yaml and
summary.json are copied to .hydra/before-resume-<time>/, since Hydra rewrites the first (and
put back if the resume fails before it changes a checkpoint: capgen.runs.records). `train()`
then resumes from <run>/checkpoints/last.ckpt (or `ckpt_path=`).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ..instantiate import instantiate
from ..lightning.optimization import restored_settings_changes
from ..runs.checkpoint import UnreadableCheckpoint
from ..runs.folders import check_working_directory
from ..runs.records import keep_before_resume
from ..runs.resume import NetworkMismatch, check_resume_checkpoint, check_run_dir, newest_loadable
from .argv import command_overrides

log = logging.getLogger(__name__)

# Lightning's DDP launcher re-runs the command for ranks > 0 with this job name added (see
# lightning.fabric.strategies.launchers.subprocess_script): that command is already rewritten.
DDP_CHILD = "hydra.job.name=train_ddp_process_"

# What the checks found worth a warning (a fallback from a damaged last.ckpt): said by the job,
# once Hydra has set up the run's logging, so that it is in the run's train.log as well as on
# the console (`said_before_logging`), not only on a console long closed.
_to_say: list[str] = []


def said_before_logging() -> list[str]:
    """The warnings the checks of this process's command line left for the job to log (once)."""
    said = list(_to_say)
    _to_say.clear()
    return said


def resume_argv(args: list[str], check_values: Callable[[DictConfig], None] | None = None,
                typed: list[str] | None = None) -> list[str]:
    """`args` (sys.argv[1:]) rewritten for `resume=<run dir>` as the module docstring says.
    check_values: capgen-train's checks of a composed config (check_train_config), handed down
    by the command, whose layer is above this one. typed: the command line as the user typed it
    (before its paths were quoted for Hydra; default `args`), for the note a failed resume leaves."""
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
    args, overrides = _set_added_keys(args, own), _set_added_keys(overrides, own)
    # Everything is checked before the first byte is written into the run: a refused resume
    # leaves the folder as it was, so the plain `resume=<run>` still works afterwards.
    fallback = check_resume(run, own, overrides, check_values)
    if os.environ.get("RANK", "0") == "0":
        # The resume to run again if it fails, as typed but for the run folder, given in full.
        rest = [a for a in (typed if typed is not None else args) if a.partition("=")[0] != "resume"]
        keep_before_resume(run, shlex.join(["capgen-train", f"resume={run}", *rest]))
    extra = [f'ckpt_path="{fallback}"'] if fallback else []
    return [*own, *args, *extra, f'hydra.run.dir="{run}"']


def _set_added_keys(args: list[str], own: list[str]) -> list[str]:
    """`args` with `+key=value` given as `key=value` where the run's own overrides (`own`)
    already add the key: the run's `+trainer.accumulate_grad_batches=2` comes first on the
    rewritten command line, so a second `+` for the key (the way the user started the run)
    would be Hydra's "Could not append to config. An item is already at ..."."""
    added = {o.key_or_group for o in OverridesParser.create().parse_overrides(own) if o.is_add()}
    return [a[1:] if a.startswith("+") and not a.startswith("++") and a[1:].partition("=")[0] in added else a
            for a in args]


def check_resume(run: Path, own: list[str], given: list[str],
                 check_values: Callable[[DictConfig], None] | None = None) -> Path | None:
    """Compose the resumed run's config (its own overrides, then `given`) and check the
    checkpoint it resumes from against it. Raises, naming the override and the command that
    works, when the resume cannot go on; returns the checkpoint to resume from instead of a
    damaged last.ckpt (the newest of the run's other checkpoints that loads), else None."""
    cfg, own_cfg = _compose(own, given), _compose(own, [])
    cfg.paths.output_dir = str(run)  # Hydra's ${hydra:runtime.output_dir}, which is not set before Hydra starts
    plain = f"capgen-train resume={run}"
    _check_values(run, cfg, plain, check_values)
    check_working_directory(run, cfg, own_cfg, f"resume={run}", plain)
    changes = restored_settings_changes(own_cfg.model.module, cfg.model.module, str(run))
    if changes:
        raise ValueError(f"resume={run}: {changes} Nothing in the run folder was changed. Resume with the run's own "
                         f"optimizer and schedule: {plain}")
    net_config = _net_config(cfg)
    last = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else run / "checkpoints" / "last.ckpt"
    try:
        check_resume_checkpoint(str(last), net_config)
        return None
    except NetworkMismatch as e:
        if cfg.get("ckpt_path") or _net_config(own_cfg) != net_config:
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
        return _fallback(run, last, net_config, own, f"is damaged: {e.reason}")


def _check_values(run: Path, cfg: DictConfig, plain: str, check_values: Callable[[DictConfig], None] | None) -> None:
    """The checks a new run makes before it builds anything (capgen-train's check_train_config,
    the data module's ranges such as data.batch_size=0), made here before Hydra writes into the
    run: a value refused once the job has started would be saved in the run's overrides.yaml,
    and the plain resume would fail on it again."""
    try:
        if check_values is not None:
            check_values(cfg)
        instantiate(cfg.data)
    except ValueError as e:
        raise ValueError(f"resume={run}: {str(e).rstrip('.')}. Nothing in the run folder was changed: correct or "
                         f"leave out that setting (the run's own settings resume with {plain}).") from None


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
    _to_say.append(f"resume={run}: {last} {problem}; resuming from {fallback}, the newest checkpoint of the run "
                   "that loads")
    return fallback
