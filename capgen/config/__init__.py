"""The Hydra side of capgen: where its configs live and what they need registered before Hydra
composes them (registry.py: `CONF_DIR`, `register()`, the resolvers), settings checked against
their constructors (checks.py), the `decode` group (decode_group.py), the optional plugins and
logger packages (plugins.py), each command's command line before Hydra reads it
(command_line.py, the one pipeline; its steps in argv.py and resume_argv.py), and the Hydra
callback that gives each command a dated run folder of its own (new_folder.py).

`capgen.conf` (the YAML files of conf/, installed as package data) is not this package.
"""

from .registry import CONF_DIR, register

__all__ = ["CONF_DIR", "register"]
