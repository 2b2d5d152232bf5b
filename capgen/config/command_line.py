"""Each capgen command's command line before Hydra reads it, as one pipeline: `command_line`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from ..runs.lock import hold, record_holder, release
from .argv import (  # PATH_KEYS: imported from here too
    PATH_KEYS,
    make_named_run_dir,
    named_run_dir,
    output_dir_as_run_dir,
    quote_paths,
    refuse_swept_paths,
    require_folder_without_run,
    require_new_run_folder,
    require_writable_run_folder,
    with_run_data_choice,
)
from .checks import check_command_keys
from .new_folder import made_for_run
from .plugins import require_logger_packages, require_plugins
from .registry import LAUNCH_TIME_ENV
from .resume_argv import DDP_CHILD, resume_argv

# The keys that may hold a list of paths: an ensemble's checkpoints (capgen.lightning.inference).
LIST_KEYS = {"eval": ("run", "ckpt_path"), "caption": ("ckpt_path",), "demo": ("run", "ckpt_path")}
# The keys whose value may be several paths separated by commas: capgen-demo's models side by
# side (`run=a,b`; capgen.commands.demo.served.split_paths), not a sweep over them.
COMMA_LIST_KEYS = {"demo": ("run", "ckpt_path")}
# The commands whose run folder may be given as paths.output_dir (capgen-prepare and capgen-demo
# write only a log folder there).
WHOLE_RUN_IN_OUTPUT_DIR = ("train", "eval", "caption")


def command_line(command: str, args: list[str], check_values: Callable[[DictConfig], None] | None = None) -> list[str]:
    """capgen-`command`'s command line (`args`, sys.argv[1:]) as Hydra is to read it. Each step
    rewrites the arguments or refuses the command (an exception, or SystemExit with one
    paragraph) before Hydra makes a run folder, so a refused command writes nothing. In order,
    each for the commands named:

    1. quote_paths (all): the values of PATH_KEYS quoted, so that a folder named by
       a sweep's overrides (`1_model=lstm,seed=2`) stays one path; a list of LIST_KEYS
       (`ckpt_path=[a,b]`, an ensemble) stays a list of quoted paths; a sweep over paths
       (`run=a,b`), which would so be one path that does not exist, refused first
       (refuse_swept_paths);
    2. output_dir_as_run_dir (train, eval, caption): paths.output_dir=X given as hydra.run.dir=X,
       so the whole run, .hydra/ included, lands in X;
    3. the launch time (train, in the launching process, not a DDP child): set in the
       environment for the processes DDP starts, so that any folder name they compose from
       it is their launcher's (the dated folder itself is reserved once, by
       capgen.config.new_folder, and handed to them on their command line);
    4. with_run_data_choice (eval): `data=<the run's data config>` when none is given, so that
       Hydra accepts the run's own data.* keys;
    5. require_writable_run_folder (all): a run folder that cannot be written, in one paragraph;
       require_folder_without_run (eval, caption): a folder named as the run folder that holds
       a run already (.hydra/), a training run's above all, refused;
    6. require_plugins, require_logger_packages (train): a missing Hydra plugin or logger
       package, with its pip command;
    7. the run folder's lock (train, global rank 0 only: DDP's processes and torchrun's or
       SLURM's other ranks write into its folder under its lock): a folder the command names
       is locked before resume_argv copies its .hydra/ aside and before Hydra writes into it
       (capgen.runs.lock), held until the process ends; one that does not exist yet is made
       first (make_named_run_dir, an exclusive mkdir: of two commands naming it at once,
       one gets it), and removed again if a later step refuses the command, or when the
       command ends with nothing but its .lock in it (capgen.config.new_folder); a new run (no
       resume=) given a folder that holds a run is refused (require_new_run_folder);
    8. resume_argv (train): `resume=<run>` as the run's own overrides and folder, checked (the
       composed config also by `check_values`, capgen-train's own checks, handed in by its main);
    9. check_command_keys (all): a key no constructor takes (`model.decoder.hiden_dim=3`,
       with + or not), refused before Hydra makes a run folder, with the close match (Hydra's
       own error would say to add +, which fails later);
    10. record_holder (train): accepted, so this process is named as the folder's writer.
    """
    typed = list(args)  # as the user typed it: the command a failed resume says to run again
    if command in PATH_KEYS:
        swept = [k for k in PATH_KEYS[command] if k not in COMMA_LIST_KEYS.get(command, ())]
        refuse_swept_paths(args, swept, LIST_KEYS.get(command, ()), command)
        args = quote_paths(args, PATH_KEYS[command], LIST_KEYS.get(command, ()))
    if command in WHOLE_RUN_IN_OUTPUT_DIR:
        args = output_dir_as_run_dir(args)
    if command == "train":
        if not any(a.startswith(DDP_CHILD) for a in args):
            os.environ[LAUNCH_TIME_ENV] = str(time.time())
    if command == "eval":
        args = with_run_data_choice(args)
    require_writable_run_folder(args, command)
    if command in ("eval", "caption"):  # their whole run, .hydra/ included, may go to a folder given (step 2)
        require_folder_without_run(args, command)
    if command != "train":
        check_command_keys(args, command)  # for eval, with the run's data config (step 4)
        return args
    require_plugins(args)
    require_logger_packages(args)
    made = make_named_run_dir(args) if rank_zero_only.rank == 0 else []
    folder = named_run_dir(args) if rank_zero_only.rank == 0 else None
    try:
        if folder is not None:
            hold(folder, record=False)  # until this process ends; nothing written before the checks
            require_new_run_folder(args, folder)  # after the lock: a run still writing there is named as such
        args = resume_argv(args, check_values, typed)
        check_command_keys(args)
    except BaseException:
        if made:  # a refused command leaves no folder of its own making behind
            release(made[0])
            for path in made:
                path.rmdir()
        raise
    if folder is not None:
        record_holder(folder)
    made_for_run(made[::-1])  # outermost first: removed innermost first if Hydra writes nothing there
    return args
