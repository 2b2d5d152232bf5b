"""The Hydra side of capgen: where its configs live (CONF_DIR), and what they need registered
before Hydra composes them (`register()`, called by every capgen command and by anything
composing capgen's configs). Beside it: the resolvers (resolvers.py), settings checked against
their constructors (checks.py), the `decode` group (decode_group.py), the optional plugins and
logger packages (plugins.py), and each command's command line before Hydra reads it
(command_line.py, the one pipeline; its steps in argv.py and resume_argv.py).

`register()` adds two things:

- Config nodes generated from constructor signatures, so that every constructor argument
  can be overridden without `+` while the YAML files state only what differs from its
  default: `model/module: captioning` (CaptioningModule) and `data: _datamodule`
  (CaptionDataModule), the bases the model and data configs start from; and from the
  fields of DecodeSettings, `decode: _settings` (the base of conf/decode/'s presets) and
  `decode: run` (capgen-eval's default: the run's own test decode).
- The OmegaConf resolvers of capgen.config.resolvers.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import inspect
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from .resolvers import register_resolvers


def _conf_dir() -> str:
    """The configs: conf/ in the source tree, installed as the package data capgen.conf
    (pyproject.toml maps one onto the other). In a source checkout that Python imports
    capgen from directly (its folder on sys.path), capgen.conf is not a package: conf/ is
    then found beside capgen/."""
    try:
        return str(importlib.resources.files("capgen.conf"))
    except ModuleNotFoundError:
        return str(Path(__file__).resolve().parents[2] / "conf")


CONF_DIR = _conf_dir()


def signature_node(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """{_target_: cls, argument: default, ...} for every constructor argument with a default
    (except `skip`): the single place those defaults are written is the constructor."""
    node: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name != "self" and name not in skip and p.default is not inspect.Parameter.empty:
            node[name] = _config_value(p.default)
    return node


def _config_value(default: Any) -> Any:
    """A constructor default as config data: a tuple as a list, a dataclass (a settings
    object such as DecodeSettings) as the dict of its fields, so each field is a setting."""
    if isinstance(default, tuple):
        return list(default)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.asdict(default)
    return default


def register() -> None:
    # Imported here: capgen-compare imports this package's run records without Lightning.
    from ..data.datamodule import CaptionDataModule
    from ..lightning.module import CaptioningModule
    from .decode_group import config_nodes as decode_nodes

    store = ConfigStore.instance()
    # decode/_settings (the presets' base) and decode/run (the run's test decode), see capgen.config.decode_group
    for name, node in decode_nodes().items():
        store.store(group="decode", name=name, node=node)
    # net, vocab, net_config: built by capgen.commands.train.fit; vocab, encoder: handed over by it.
    # The run's monitor drives the plateau schedule too (oc.select: configs without a top-level
    # monitor, such as capgen-prepare's, still resolve).
    module = {**signature_node(CaptioningModule, ("net", "vocab", "net_config")),
              "monitor": "${oc.select:monitor,val/CIDEr}", "monitor_mode": "${oc.select:monitor_mode,max}"}
    store.store(group="model/module", name="captioning", node=module)
    store.store(group="data", name="_datamodule", node={**signature_node(CaptionDataModule, ("vocab", "encoder")), "seed": "${seed}"})
    register_resolvers()
