"""Optional extras: the Hydra plugins some overrides need, checked before Hydra runs.

Without the plugin installed, Hydra only says it "could not find 'hydra/sweeper/optuna'";
this says which extra to install instead.
"""

from __future__ import annotations

import importlib.util

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
