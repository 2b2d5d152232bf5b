"""`--help`'s list of config groups: the groups the command composes, each with the options
a user picks (conf/hydra/default.yaml puts it in the help template as ${capgen.help_groups:}).

Hydra's own list ($APP_CONFIG_GROUPS) names every group on the config path for every command,
`decode` for capgen-train too, and the bases capgen generates for the YAML files to start from
(capgen.config.registry.BASES: data/_datamodule, decode/_settings, model/module/captioning),
which no one selects on the command line.
"""

from __future__ import annotations

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


def config_groups() -> str:
    """One line per group the command's config chose an option (or null) for: `group: a, b`."""
    from .registry import BASES  # registry registers this resolver

    choices = HydraConfig.get().runtime.choices  # {"data": "shapes", "model/encoder": ..., "hydra/launcher": ...}
    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(choices):
        if group == "hydra" or group.startswith("hydra/"):
            continue
        options = [name for name in sorted(loader.get_group_options(group)) if name != BASES.get(group)]
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)
