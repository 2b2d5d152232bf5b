"""Command-line arguments that name paths, made safe for Hydra's override parser.

Hydra reads `key=value` with its own grammar, in which `,` makes a sweep, `=` and spaces
end the value and `'`/`"` quote. A sweep job's folder is named by its overrides
(`multirun/<time>/1_model=lstm,model.decoder.hidden_dim=512`), so `resume=`, `run=` or
`ckpt_path=` pointing into one would otherwise be read as more overrides and a sweep.
Each command quotes the values of the keys that hold paths before Hydra sees them.
"""

from __future__ import annotations

from collections.abc import Iterable


def quote_paths(args: list[str], keys: Iterable[str]) -> list[str]:
    """`args` (sys.argv[1:]) with the value of every `key=value` whose key is in `keys`
    quoted, unless it is empty or already quoted. Flags and other overrides are unchanged."""
    keys = set(keys)
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if key in keys and sep and value and value[0] not in "'\"":
            if "'" in value and '"' in value:
                raise ValueError(f"{arg}: a path with both ' and \" cannot be passed to Hydra; rename the folder")
            quote = "'" if "'" not in value else '"'
            arg = f"{key}={quote}{value}{quote}"
        quoted.append(arg)
    return quoted


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
