"""The steps of a command line before Hydra reads it (capgen.config.command_line runs them in
order): a command line's overrides without Hydra's flags (`command_overrides`), paths made safe
for Hydra's override parser, paths.output_dir as the run folder, where a command will write,
the run folder a capgen-train command line names, and the run's data config for capgen-eval.

Hydra reads `key=value` with its own grammar, in which `,` makes a sweep, `=` and spaces
end the value and `'`/`"` quote. A sweep job's folder is named by its overrides
(`multirun/<time>/1_model=lstm,model.decoder.hidden_dim=512`), so `resume=`, `run=` or
`ckpt_path=` pointing into one would otherwise be read as more overrides and a sweep.
Each command quotes the values of the keys that hold paths before Hydra sees them.

Where a command will write is checked here too, before Hydra makes its run folder
(`require_writable_run_folder`): a folder on a read-only mount, or one this user may not
write, or a file where the folder (or one above it) should be, would otherwise end in a
traceback from Hydra's mkdir, or from the first file a resume writes, instead of a paragraph
with the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ..runs.folders import held_run, is_run, not_a_run, run_data_choice
from . import CONF_DIR

# The data configs' path settings (conf/data/*.yaml): quoted, `data.root=~/pets` reaches the
# source, which expands `~`, instead of stopping Hydra's lexer, and a comma stays in the path.
DATA_PATH_KEYS = ("data.root", "data.cache_dir", "data.source.path", "data.source.captions", "data.source.karpathy_json",
                  "data.source.image_dir")
# The keys whose values are paths, quoted for Hydra's override parser (see quote_paths); here, not
# in command_line.py, so that capgen-compare gives a run's command line without importing the rest.
PATH_KEYS = {"train": ("resume", "ckpt_path", "init_from", *DATA_PATH_KEYS), "eval": ("run", "ckpt_path", *DATA_PATH_KEYS),
             "caption": ("ckpt_path", "images"), "demo": ("run", "ckpt_path"), "prepare": ("cache_dir", *DATA_PATH_KEYS)}

# Hydra's own command-line flags that take a value as the next argument (`--cfg job`,
# `-p pkg`, ...): that value is not an override. `--info` takes one of INFO_CHOICES, or none.
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
INFO_FLAGS, INFO_CHOICES = {"--info", "-i"}, {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def command_overrides(args: list[str]) -> list[str]:
    """The overrides (`key=value`) of a command line (sys.argv[1:]), without Hydra's flags and
    their values, so that `capgen-train --cfg job model=lstm` reads as the one override
    `model=lstm` (each capgen command looks at its overrides before Hydra starts)."""
    overrides, skip_next = [], False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            takes_value = arg in HYDRA_VALUE_FLAGS or (arg in INFO_FLAGS and args[i + 1:i + 2] and args[i + 1] in INFO_CHOICES)
            skip_next = bool(takes_value)
        else:
            overrides.append(arg)
    return overrides


def quote_paths(args: list[str], keys: Iterable[str], lists: Iterable[str] = ()) -> list[str]:
    """`args` (sys.argv[1:]) with the value of every `key=value` whose key is in `keys`
    quoted, unless it is empty, already quoted or null (no path: the setting's default None).
    Flags and other overrides are unchanged.

    A key in `lists` may hold a list in Hydra's syntax, `key=[a,b,c]` (an ensemble's
    checkpoints): each item is quoted, and stays a list. The items are split at commas into
    the shortest runs of parts that name existing files or folders, so that a sweep job's
    folder (`1_model=lstm,seed=2`) stays one item; a part that names nothing is an item of
    its own (the command then names it as missing). A value that names an existing path is
    that path, brackets and all."""
    keys, lists = set(keys), set(lists)
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if key in keys and sep and value and value[0] not in "'\"" and value != "null":
            if key in lists and _is_list(value):
                items = _list_items(value[1:-1])
                arg = f"{key}=[{','.join(_quoted(arg, item) for item in items)}]"
            else:
                arg = f"{key}={_quoted(arg, value)}"
        quoted.append(arg)
    return quoted


def refuse_swept_paths(args: list[str], keys: Iterable[str], lists: Iterable[str], command: str) -> None:
    """ValueError, in one paragraph, for `key=a,b` where `a,b` names nothing but each of a and b
    names an existing file or folder: a sweep over paths (`capgen-eval -m run=a,b`), which
    quote_paths takes whole, as one path that does not exist; without this, the job ends in
    "no such folder" (in a sweep, Hydra's raw error) with nothing saying why."""
    keys, lists = set(keys), set(lists)
    for arg in command_overrides(args):
        key, _, value = arg.partition("=")
        if (key.lstrip("+") not in keys or "," not in value or value[0] in "'\"[" or value == "null"
                or Path(value).expanduser().exists()):
            continue
        items = _list_items(value)
        if len(items) > 1 and all(Path(item).expanduser().exists() for item in items):
            ensemble = f", or {key}=[{value}] to use them together, as an ensemble" if key.lstrip("+") in lists else ""
            raise ValueError(
                f"{arg}: no such path, but {' and '.join(items)} each exist. A path setting is taken whole (a "
                f"folder's name may hold commas, as a sweep job's does), so it cannot be swept over: give one "
                f"command per path, e.g. for p in {' '.join(items)}; do capgen-{command} {key}=\"$p\" ...; done{ensemble}. "
                f"Nothing was written.")


def _quoted(arg: str, value: str) -> str:
    if "'" in value and '"' in value:
        raise ValueError(f"{arg}: a path with both ' and \" cannot be passed to Hydra; rename the folder")
    quote = "'" if "'" not in value else '"'
    return f"{quote}{value}{quote}"


def _is_list(value: str) -> bool:
    """`[...]` of unquoted items, and not the name of an existing file or folder."""
    return (value.startswith("[") and value.endswith("]") and not any(q in value for q in "'\"")
            and not Path(value).expanduser().exists())


def _list_items(inner: str) -> list[str]:
    """The items of a list's inside `a,b,c` (see quote_paths), without surrounding spaces."""
    parts, items, start = inner.split(","), [], 0
    if not inner.strip():
        return []
    while start < len(parts):
        end = next((e for e in range(start + 1, len(parts) + 1)
                    if Path(",".join(parts[start:e]).strip()).expanduser().exists()), start + 1)
        items.append(",".join(parts[start:end]).strip())
        start = end
    return items


def output_dir_as_run_dir(args: list[str]) -> list[str]:
    """`args` with `paths.output_dir=X` given as `hydra.run.dir=X`.

    paths.output_dir is Hydra's run folder (conf/paths/default.yaml); setting it alone would
    split a run in two: its checkpoints, metrics and events in X, and the `.hydra/` config and
    log, which `capgen-eval run=` and `resume=` read, in a dated folder under outputs/. As
    hydra.run.dir, both land in X. A sweep's jobs cannot share one folder: there it is refused,
    as is a different hydra.run.dir beside it."""
    given = [a for a in args if a.partition("=")[0] == "paths.output_dir"]
    if not given:
        return args
    value = given[-1].partition("=")[2]
    if "-m" in args or "--multirun" in args:
        raise SystemExit(f"{given[-1]}: a sweep's jobs each need their own run folder, and paths.output_dir would "
                         f"put them all in one. Name the sweep's folder with hydra.sweep.dir={value} instead "
                         f"(each job gets a sub-folder of it).")
    run_dirs = [a.partition("=")[2].strip("'\"") for a in args if a.partition("=")[0] == "hydra.run.dir"]
    if run_dirs and run_dirs[-1] != value.strip("'\""):
        raise SystemExit(f"{given[-1]} and hydra.run.dir={run_dirs[-1]} name two run folders; give one of them "
                         f"(paths.output_dir is the run folder Hydra makes, hydra.run.dir).")
    rest = [a for a in args if a.partition("=")[0] not in ("paths.output_dir", "hydra.run.dir")]
    return [*rest, *quote_paths([f"hydra.run.dir={value}"], ["hydra.run.dir"])]


def unwritable(folder: Path) -> str | None:
    """Why `folder` (or, when it does not exist yet, the folder that would hold it) cannot be
    written, or None when it can."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # Hydra's makedirs would stop there with a traceback
        return f"{existing} is a file, not a folder"
    if os.access(existing, os.W_OK):
        return None
    readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    return f"{existing} is on a read-only file system" if readonly else f"{existing} is not writable by this user"


def run_folder(args: list[str], task: str) -> Path:
    """The folder a command line (sys.argv[1:]) writes its run into, as conf/hydra/default.yaml
    names it: hydra.run.dir (hydra.sweep.dir with -m), resume=<run> for capgen-train, else
    outputs/<task>/ in the working directory (the dated folder goes inside it)."""
    try:
        given = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(command_overrides(args))
                 if not o.is_sweep_override()}
    except HydraException:
        given = {}  # Hydra reports the bad override itself
    key = "hydra.sweep.dir" if "-m" in args or "--multirun" in args else "hydra.run.dir"
    for value in (given.get(key), given.get("resume") if task == "train" else None):
        if isinstance(value, str) and "${" not in value:
            return Path(value).expanduser().absolute()
    return Path.cwd() / "outputs" / task


def require_writable_run_folder(args: list[str], task: str) -> None:
    """SystemExit with one paragraph when the run folder of `args` cannot be written."""
    folder = run_folder(args, task)
    why = unwritable(folder)
    if why is None:
        return
    if task == "train" and any(a.partition("=")[0] == "resume" for a in args):
        if not folder.is_dir():
            return  # not a run folder: resume_argv says so (capgen.runs.resume.check_run_dir)
        raise SystemExit(
            f"capgen-train: resume={folder}: {why}, and resuming writes the run's checkpoints and records into its "
            f"folder. Nothing was changed. Copy the run to a writable place and resume the copy: cp -r {folder} "
            f"<writable folder>/ && capgen-train resume=<writable folder>/{folder.name}"
        )
    raise SystemExit(
        f"capgen-{task}: cannot make the run folder {folder}: {why}, and every run writes its config, log and "
        f"results there. Give a writable folder with hydra.run.dir=<folder> (or paths.output_dir=<folder>), or run "
        f"from a writable working directory."
    )


def named_run_dir(args: list[str], existing: bool = True) -> Path | None:
    """The existing folder a capgen-train command line (sys.argv[1:]) will write its run into,
    when it names one: resume=<run> (see capgen.runs.resume), else hydra.run.dir=<folder>.
    None for a sweep (-m: each job has its own folder), a folder that does not exist yet, or
    one given with ${...} (Hydra resolves it later). existing=False: the folder named
    whether it exists or not (anything but a folder that exists, such as a file, included)."""
    if "-m" in args or "--multirun" in args:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(command_overrides(args))
    except HydraException:
        return None  # Hydra reports the bad override itself
    given = {o.key_or_group: o.value() for o in parsed if not o.is_sweep_override()}
    value = given.get("resume") or given.get("hydra.run.dir")
    if not isinstance(value, str) or "${" in value:
        return None
    folder = Path(value).expanduser().absolute()
    return folder if folder.is_dir() or not existing else None


def make_named_run_dir(args: list[str]) -> list[Path]:
    """Make the new folder a capgen-train command line names as its run folder
    (hydra.run.dir=<folder>, no resume=) when it does not exist yet, with an exclusive mkdir, so
    that it can be locked before Hydra writes into it: of two commands started at once with the
    same new folder, one makes it and the other finds it made (and then in use, or holding a
    run). Returns the folders made, innermost first (its missing parents too), for a refused
    command to remove again; [] when nothing was made."""
    folder = named_run_dir(args, existing=False)
    if folder is None or folder.exists() or "resume" in {a.partition("=")[0] for a in command_overrides(args)}:
        return []
    missing = [folder, *[p for p in folder.parents if not p.exists()]]
    made = []
    for path in reversed(missing):  # outermost first
        try:
            os.mkdir(path)
        except FileExistsError:
            if path == folder:
                break  # another process made it just now: its lock or its run refuses this one
            continue
        except OSError:
            break  # require_writable_run_folder said it can be written; Hydra reports anything else
        made.append(path)
    return made[::-1]


def require_new_run_folder(args: list[str], folder: Path) -> None:
    """SystemExit with one paragraph when a new run (no resume=) is given, as hydra.run.dir,
    the existing `folder` (named_run_dir) of another run: it would overwrite that run's config,
    last.ckpt and summary.json and mix its checkpoints and curves with its own."""
    if any(a.partition("=")[0] == "resume" and a.partition("=")[2] not in ("", "null") for a in command_overrides(args)):
        return  # resume_argv continues the run there
    held = held_run(folder)
    if held:
        raise SystemExit(
            f"capgen-train: hydra.run.dir={folder} already holds a run ({', '.join(held)}), and a new run there would "
            f"overwrite its config, last checkpoint and summary and mix its checkpoints with the new run's. Nothing "
            f"was written. Continue that run with capgen-train resume={folder} (trainer.max_epochs=... may be added), "
            f"or give the new run another folder: hydra.run.dir=<new folder>."
        )


def require_folder_without_run(args: list[str], command: str) -> None:
    """SystemExit with one paragraph when the existing folder a capgen-eval or capgen-caption
    command line names as its run folder (named_run_dir) already holds a run of any command
    (.hydra/): Hydra would replace that run's saved config, which a training run's resume=,
    capgen-eval run= and capgen-compare read."""
    folder = named_run_dir(args)
    if folder is None or not (folder / ".hydra").is_dir():
        return
    held = "a capgen-train run" if is_run(folder) else f"another command's run ({not_a_run(folder)})"
    raise SystemExit(
        f"capgen-{command}: hydra.run.dir={folder} (or paths.output_dir) already holds {held}, and this command "
        f"would replace its saved config in {folder / '.hydra'}, which resume=, capgen-eval run= and capgen-compare "
        f"read. Nothing was written. Give the command its own folder with paths.output_dir=<new folder>, or leave "
        f"it out (outputs/{command}/<time>)."
    )


def with_run_data_choice(args: list[str]) -> list[str]:
    """Command-line overrides with `data=<the run's data config>` added when none is given
    (for an ensemble, `ckpt_path=[a,b]`, the first checkpoint's run's).

    Hydra checks data.* overrides against the data config it composes; without this, a
    setting that only the run's data config has (data.root=... for a COCO run) would be
    refused as unknown before the run's config is even read. A checkpoint without its run
    folder given data.* settings: the data config it records it was trained on (capgen-eval
    lays them over the recorded settings, capgen.commands.eval.data).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(command_overrides(args))
    except HydraException:
        return args  # Hydra reports the bad override itself
    given = {o.key_or_group: o for o in parsed}
    ckpt = given.get("ckpt_path") or given.get("run")
    if "data" in given or ckpt is None or ckpt.is_sweep_override():
        return args
    value = ckpt.value()
    if isinstance(value, list) and value:  # an ensemble: its first member's run gives the data
        value = value[0]
    if not isinstance(value, str):
        return args
    choice = run_data_choice(value)
    if choice is None and any(k.lstrip("+~").startswith("data.") for k in given) and Path(value).is_file():
        from ..runs.checkpoint import recorded_data_choice  # here: torch only for this case

        choice = recorded_data_choice(value)
    if choice is None or not (Path(CONF_DIR) / "data" / f"{choice}.yaml").is_file():
        return args
    return [*args, f"data={choice}"]
