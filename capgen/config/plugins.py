"""Optional extras: the Hydra plugins and the logger packages some overrides need, checked
before Hydra runs (and so before it writes the run folder).

Without the plugin installed, Hydra only says it "could not find 'hydra/sweeper/optuna'";
this says which extra to install instead. Likewise `logger=mlflow` without mlflow
(capgen.lightning.loggers.missing_package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from . import CONF_DIR
from .argv import command_overrides

# override (its start) -> (the plugin's module, the extra that installs it). Every
# hparams_search config uses the Optuna sweeper.
PLUGINS = {
    "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    "hydra/launcher=submitit": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
}


def require_plugins(args: list[str]) -> None:
    """Exit with the pip command to run when an override in `args` needs a plugin that is
    not installed."""
    for arg in args:
        for start, (module, extra) in PLUGINS.items():
            if arg.startswith(start) and arg != "hparams_search=null" and importlib.util.find_spec(module) is None:
                raise SystemExit(
                    f"{arg} needs a Hydra plugin ({module}) from capgen's optional '{extra}' extra, "
                    f'which is not installed here: pip install -e ".[{extra}]"'
                )


def require_logger_packages(args: list[str]) -> None:
    """Exit with the pip command to run when a `logger=` override in `args` (one logger, a list
    `[tensorboard,mlflow]`, or a sweep over them) names a logger whose package is not installed;
    and with the way to write it for `logger=null`."""
    from ..lightning.loggers import check_logger_packages  # Lightning's loggers: only when a logger is named

    for arg in command_overrides(args):
        if not arg.lstrip("+").startswith("logger="):
            continue
        try:
            (override,) = OverridesParser.create().parse_overrides([arg])
        except HydraException:
            continue  # Hydra reports the malformed override itself
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        if None in values:  # Hydra's own error for it ("must be a string or a list") does not say what to write
            raise SystemExit(f"{arg}: Hydra cannot set a config group to null. For a run without any logger, "
                             "write logger=[] (or ~logger).")
        for value in values:
            for name in value if isinstance(value, list) else [value]:
                path = Path(CONF_DIR) / "logger" / f"{name}.yaml"
                if isinstance(name, str) and path.is_file():  # an unknown name is Hydra's error
                    try:
                        check_logger_packages(OmegaConf.load(path), setting=arg)
                    except ModuleNotFoundError as e:
                        raise SystemExit(str(e)) from None
