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
