"""Finding run folders and reading what they say about themselves: the runs under a folder, the
run a checkpoint belongs to, its best checkpoint, and its saved Hydra config and choices
(<run>/.hydra/config.yaml, overrides.yaml, hydra.yaml), for capgen-compare, capgen-eval run=,
capgen-caption and capgen-demo.
"""

from __future__ import annotations

import inspect
import logging
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .records import SUMMARY, UnreadableRecord, read_summary

log = logging.getLogger(__name__)

# The side images are resized to when neither a checkpoint nor its run says (an earlier capgen's
# checkpoint without its run folder).
DEFAULT_IMAGE_SIZE = 256


def is_run(path: Path) -> bool:
    """A capgen-train run folder: one holding .hydra/config.yaml that its .hydra/hydra.yaml does
    not name another command's. capgen-eval, caption, demo and prepare leave a .hydra/ too;
    Hydra records the config each command composes (hydra.job.config_name: train, eval, ...),
    which, unlike task_name, no override changes. A run without a readable hydra.yaml (copied
    without it, or written by hand) still counts: only another command's name rules one out."""
    return (path / ".hydra" / "config.yaml").is_file() and _config_name(path) in (None, "train")


def _config_name(path: Path) -> str | None:
    try:  # the C loader: hydra.yaml is long, and capgen-compare reads one per folder
        saved = yaml.load((path / ".hydra" / "hydra.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return saved["hydra"]["job"]["config_name"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None


def not_a_run(path: Path) -> str:
    """Why is_run(path) is false, for a message."""
    if (path / ".hydra" / "config.yaml").is_file():
        return f"its .hydra/hydra.yaml says capgen-{_config_name(path)} wrote it"
    return "it has no .hydra/config.yaml"


def held_run(folder: Path) -> list[str]:
    """What of a run `folder` holds that a new run there would overwrite or mix with its own
    (.hydra/config.yaml, checkpoints/, summary.json); none when the run there stopped before
    its first checkpoint and did not complete: it has nothing to resume or keep (resume=
    refuses it and says to start it again), and the same command may start it again."""
    held = [name for name in (".hydra/config.yaml", "checkpoints/", SUMMARY) if (folder / name).exists()]
    try:
        completed = (read_summary(folder) or {}).get("status") == "completed"
    except UnreadableRecord:
        completed = True  # it cannot say: keep it
    return held if completed or any((folder / "checkpoints").glob("*.ckpt")) else []


def find_runs(root: Path) -> list[Path]:
    """The capgen-train run folders at or under `root` (see is_run), sorted by path."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if is_run(root):
        return [root]
    found = (p.parent.parent for p in root.glob("**/.hydra/config.yaml"))
    return sorted((p for p in found if is_run(p)), key=_natural_key)


def _natural_key(path: Path) -> list:
    """Sort key where 10_... comes after 9_... (Hydra numbers sweep jobs from 0)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def run_overrides(run: Path) -> list[str]:
    """The run's command-line overrides, as Hydra saved them in .hydra/overrides.yaml;
    UnreadableRecord when that file is not a list."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    try:
        overrides = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UnreadableRecord(f"{path}: cannot be read as YAML ({' '.join(str(e).split())})") from None
    if not isinstance(overrides, ListConfig):
        raise UnreadableRecord(f"{path}: not a list of overrides")
    return [str(o) for o in overrides]


def start_again(run: Path, path_keys: tuple[str, ...] = (), in_its_folder: bool = False) -> str:
    """The capgen-train command line that starts the run again, its overrides as typed (quoted
    for the shell); `path_keys`: the settings whose values capgen-train quotes for Hydra itself
    (capgen.config.argv.PATH_KEYS), saved so and left out. With `in_its_folder` (a run that left
    no checkpoint, whose folder a new run may take), in the same folder where the user named it
    (hydra.run.dir=, or paths.output_dir=, which capgen gives Hydra as hydra.run.dir): a dated
    one is a new folder again."""
    try:
        overrides = run_overrides(run)
    except UnreadableRecord:
        overrides = []
    words = [shlex.quote(as_typed(o, path_keys)) for o in overrides]
    if in_its_folder and _named_folder(run):
        words.append(shlex.quote(f"hydra.run.dir={run}"))
    return f"capgen-train {' '.join(words)}".rstrip()


def _named_folder(run: Path) -> bool:
    """Whether the run's folder was named on its command line (its Hydra overrides, .hydra/hydra.yaml)."""
    try:
        given = OmegaConf.select(OmegaConf.load(run / ".hydra" / "hydra.yaml"), "hydra.overrides.hydra", default=None)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return any(str(o).startswith("hydra.run.dir=") for o in (given or []))


def as_typed(override: str, path_keys: Iterable[str]) -> str:
    """A path override as the user typed it: each command quotes the values of its path settings
    (`path_keys`: resume=, data.root=, ...) for Hydra (capgen.config.argv.quote_paths), and Hydra
    saves them so; the quotes are left out, for a command line shown to the user (quoted for the shell)."""
    key, sep, value = override.partition("=")
    if key.lstrip("+") in set(path_keys) and len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        return f"{key}{sep}{value[1:-1]}"
    return override


def best_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (by its `monitor`), as its summary.json names it. A run that
    was interrupted or failed after a best checkpoint was saved records its best so far: that
    one, with a warning that the run did not finish."""
    if not run.is_dir():
        raise FileNotFoundError(f"run={run}: no such folder")
    if not is_run(run):
        raise ValueError(f"run={run}: not a capgen-train run folder ({not_a_run(run)}); give a run folder of capgen-train's, e.g. under outputs/train")
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    hint = f"give ckpt_path=<file> instead; {run / 'checkpoints'} holds {ckpts or 'no checkpoints'}"
    try:
        summary = read_summary(run)
    except UnreadableRecord as e:
        raise ValueError(f"run={run}: its best checkpoint is named in {SUMMARY}, which is unreadable: {e}; {hint}") from None
    status = None if summary is None else summary["status"]
    if status != "completed" and not (summary or {}).get("best_checkpoint"):
        state = {None: "did not finish", "interrupted": "was interrupted"}.get(status, status)
        raise ValueError(f"run={run}: the run {state}, so it has no best checkpoint recorded in {SUMMARY}; {hint}")
    if not summary.get("best_checkpoint"):
        raise ValueError(f"run={run}: no best checkpoint was saved (validation never ran?); {hint}")
    path = run / summary["best_checkpoint"]
    if not path.is_file():
        raise FileNotFoundError(f"run={run}: its best checkpoint {path} is missing; {hint}")
    if status != "completed":
        why = (f"was interrupted ({summary.get('signal', 'a signal')})" if status == "interrupted"
               else f"failed ({summary.get('error', 'see its error.txt')})")
        resume = f"capgen-train resume={shlex.quote(str(run))}"
        go_on = (f"; {resume} continues it" if summary.get("resume")
                 # a failed run resumes from its last.ckpt as an interrupted one does, once its cause is fixed
                 else f"; with the cause fixed, {resume} continues it" if (run / "checkpoints" / "last.ckpt").is_file()
                 else "")
        log.warning("run=%s: the run %s before it finished: using its best checkpoint so far, %s%s",
                    run, why, summary["best_checkpoint"], go_on)
    return path


def run_of_checkpoint(ckpt_path: str) -> Path | None:
    """The training run a checkpoint belongs to: its grandparent, when that holds the
    run's saved config (<run>/.hydra/config.yaml, the checkpoint in <run>/checkpoints/).
    Where the checkpoint is given wins; a symlink's target's run is the fallback."""
    for path in (Path(ckpt_path).absolute(), Path(ckpt_path).resolve()):
        run = path.parent.parent
        if is_run(run):
            return run
    return None


def run_config(ckpt_path: str) -> DictConfig | None:
    """The saved config of the run a checkpoint belongs to, or None."""
    run = run_of_checkpoint(ckpt_path)
    return OmegaConf.load(run / ".hydra" / "config.yaml") if run else None


def run_choice(path: str, group: str) -> str | None:
    """The config of `group` the run was composed with (`data=<name>`, `model=<name>`), from
    its .hydra/hydra.yaml; `path` is one of the run's checkpoints or the run folder itself."""
    run = Path(path) if is_run(Path(path)) else run_of_checkpoint(path)
    hydra_yaml = run / ".hydra" / "hydra.yaml" if run else None
    if hydra_yaml is None or not hydra_yaml.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(hydra_yaml), f"hydra.runtime.choices.{group}", default=None)


def run_data_choice(path: str) -> str | None:
    """The data config the run was composed with (`data=<name>`), see run_choice."""
    return run_choice(path, "data")


def training_image_size(run_cfg: DictConfig | None) -> int | None:
    """The side the run's images were resized to: data.source.image_size, else the source
    class's default for it (96 for shapes); None when the run does not say."""
    source = run_cfg.get("data", {}).get("source") if run_cfg is not None else None
    if source is None:
        return None
    if source.get("image_size") is not None:
        return int(source.image_size)
    default = _image_size_parameter(source)
    return int(default) if isinstance(default, int) and not isinstance(default, bool) else None


def _image_size_parameter(source: DictConfig):
    """The default of the source class's image_size parameter; inspect's `empty` when it has
    none; None when it has no such parameter (e.g. coco.pt's fixed 112 px) or is no class here."""
    try:
        return inspect.signature(hydra.utils.get_class(source._target_)).parameters["image_size"].default
    except Exception:
        return None


def takes_image_size(source: DictConfig | None) -> bool:
    """Whether a data config's source (data.source) resizes its images to an image_size."""
    return source is not None and "_target_" in source and _image_size_parameter(source) is not None


def checkpoint_image_size(ckpt_path: str, recorded: int | None) -> int | None:
    """The side a checkpoint's training images were resized to: as the checkpoint records it
    (`recorded`, capgen.runs.provenance: capgen-train writes it), else as its run folder's saved
    config says (a checkpoint of an earlier capgen, still in its run folder); None when
    neither does."""
    return recorded or training_image_size(run_config(ckpt_path))


# The settings read as paths relative to the working directory (data.source's captions and
# image_dir are relative to data.root).
CWD_PATHS = ("data.root", "data.cache_dir", "data.source.path")


def check_working_directory(run: Path, cfg: DictConfig, own_cfg: DictConfig, setting: str, plain: str) -> None:
    """Refuses to read a run's data from another working directory than the run's when a data
    path of the run's own settings (`own_cfg`; not one given now, in `cfg`) is relative: it
    would name other files there (or none). `setting` names what points at the run
    (`resume=<run>`, `run=<run>`), `plain` the command that works from the run's directory.
    Refused rather than resolved against the run's directory: which settings are paths, and
    relative to what, is each data source's business (a key missed here would still be read
    from the new directory), and a refusal cannot train on, or score, the wrong data."""
    hydra_yaml = run / ".hydra" / "hydra.yaml"
    started_in = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd") if hydra_yaml.is_file() else None
    if started_in is None or Path(started_in) == Path.cwd():
        return
    relative = {key: value for key in CWD_PATHS
                if isinstance(value := OmegaConf.select(cfg, key), str) and not Path(value).expanduser().is_absolute()
                and value == OmegaConf.select(own_cfg, key)}
    if relative:
        key, value = next(iter(relative.items()))
        raise ValueError(
            f"{setting}: the run was started in {started_in}, and its {', '.join(f'{k}={v}' for k, v in relative.items())} "
            f"is relative to the working directory, so from {Path.cwd()} it would read other files, or none. Nothing in "
            f"the run folder was changed. Run it from the run's working directory (cd {shlex.quote(started_in)} && {plain}), "
            f"or give the path in full ({plain} {shlex.quote(f'{key}={Path(started_in) / value}')})."
        )
