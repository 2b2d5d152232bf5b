"""What a resume reads from a run folder, checked before Lightning touches it:
`capgen-train resume=<run dir>` continues the run in its own folder from
<run>/checkpoints/last.ckpt (or `ckpt_path=` when given too); the command line is rewritten
for it before Hydra starts (capgen.config.resume_argv). Each logger continues the run's own
logs (capgen.lightning.loggers.resume_kwargs): TensorBoard appends to the run's event folder,
telling TensorBoard to drop whatever the interrupted run logged after that checkpoint
(`purge_step`), so each curve continues without a doubled tail.

`check_resume_checkpoint` checks a checkpoint before Lightning touches it, so that resuming
from the wrong file fails with a message that names it and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from .checkpoint import Checkpoint, read_checkpoint

log = logging.getLogger(__name__)

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
    checkpoint (capgen.runs.checkpoint.read_checkpoint) of the network `net_config` builds."""
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


def newest_loadable(folder: Path, net_config: dict, exclude: Path) -> Path | None:
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
