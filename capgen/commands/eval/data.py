"""The data config capgen-eval scores a checkpoint on, and the check that it keeps the
checkpoint's own splits.

Where it comes from, first that applies:
- the run's saved config (<run>/.hydra/config.yaml, beside <run>/checkpoints/), its `data`
  node as it was trained, with the user's data.* overrides on top;
- for a checkpoint without its run folder, the data config the checkpoint records it trained
  with (capgen.runs.provenance: resolved, its paths absolute), the data.* overrides on top;
  one line says so (and which data.* went on top), and a recorded folder or file that is no
  longer there, and not replaced by a data.* given, is refused naming the setting to give;
- `data=<name>` naming another data config, or a checkpoint of an earlier capgen that records
  none: the data config composed from conf/eval.yaml and the command line (a warning says so
  when no run config is beside the checkpoint), its images resized to the side the checkpoint
  records it trained at unless data.source.image_size is given; without data= such a
  checkpoint of other data than the default (shapes) is refused, as shapes would say nothing of it.

Whichever it is, a data config of the checkpoint's own source whose split settings
(a source's SPLIT_SETTINGS, e.g. data=custom's split_fractions and split_seed) differ from the
ones the checkpoint records is refused, naming both: it would draw other splits, and score the
checkpoint on images it was trained on.
"""

from __future__ import annotations

import logging
import os
import shlex

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ...runs.folders import CWD_PATHS, takes_image_size
from ...runs.provenance import TrainedOn, split_settings

log = logging.getLogger(__name__)

DEFAULT = "shapes"  # conf/eval.yaml's data


def apply_data_overrides(data: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply the data.* command-line overrides to `data` (a data config node) as Hydra would:
    `key=v` sets an existing key (a dict value merges in), `+key=v` adds one, `++key=v` sets
    or adds, `~key` deletes. Unknown keys fail with the override named."""
    root = OmegaConf.create({"data": data})
    OmegaConf.set_struct(root, True)  # so a key the run's data config lacks is an error
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.key_or_group.startswith("data."):
            continue
        key = o.key_or_group
        try:
            if o.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(root, parent)
                if node is None or leaf not in node:
                    raise KeyError(leaf)
                with open_dict(node):
                    del node[leaf]
            elif o.is_add() or o.is_force_add():
                if o.is_add() and OmegaConf.select(root, key, default=None) is not None:
                    raise ValueError(f"{key} already exists; use {key}=... to change it")
                OmegaConf.update(root, key, o.value(), merge=True, force_add=True)
            else:
                OmegaConf.update(root, key, o.value(), merge=True)
        except (KeyError, AttributeError, ValueError) as e:
            raise ValueError(
                f"could not apply {o.input_line} to the run's saved data config ({e}); its keys are "
                f"{sorted(data.keys())}; use +{key}=... to add a key"
            ) from None
    OmegaConf.set_struct(root, False)
    return root.data


def eval_data_config(cfg: DictConfig, overrides: list[str], run_cfg: DictConfig | None, run_choice: str | None,
                     trained_image_size: int | None = None, trained_data: str | None = None,
                     recorded: TrainedOn | None = None) -> DictConfig:
    """The data config to evaluate on (see the module docstring). `trained_image_size`: the side
    the checkpoint records its training images were resized to; `trained_data`: the data
    config it records it was trained on; `recorded`: all it records of its data (its config
    and split settings: capgen.runs.provenance), for the first checkpoint to score."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    data_override = next((o for o in parsed if o.key_or_group == "data"), None)
    if run_cfg is None and recorded is not None and recorded.config is not None and (
            data_override is None or data_override.value() == recorded.data):
        data = recorded_data_config(cfg, overrides, recorded)
    else:
        data = composed_or_run_data(cfg, overrides, parsed, run_cfg, run_choice, trained_image_size, trained_data)
    if recorded is not None:
        check_splits(cfg, data, recorded)
    return data


def composed_or_run_data(cfg: DictConfig, overrides: list[str], parsed: list, run_cfg: DictConfig | None,
                         run_choice: str | None, trained_image_size: int | None, trained_data: str | None) -> DictConfig:
    """The run's saved data config with the data.* overrides on top, or the one composed from
    conf/eval.yaml (see the module docstring)."""
    data_override = next((o for o in parsed if o.key_or_group == "data"), None)
    # `data=<name>` replaces the run's data unless it names the very config the run used
    # (which is also what with_run_data_choice adds when none is given).
    replaced = data_override is not None and data_override.value() != run_choice
    if run_cfg is None or "data" not in run_cfg or replaced:
        if run_cfg is None and data_override is None and trained_data not in (None, DEFAULT):
            # Scoring it on the default synthetic data says nothing of it: most likely its data was meant.
            raise ValueError(
                f"ckpt_path={cfg.ckpt_path}: no saved run config is beside it (<run>/.hydra/config.yaml), and it was "
                f"trained on data={trained_data}, so the default data={DEFAULT} would score it on other data. Give its "
                f"data: capgen-eval ckpt_path=... data={trained_data} data.root=<its folder> (with the settings it trained "
                f"with), or data={DEFAULT} to score it on {DEFAULT} all the same."
            )
        if run_cfg is None:
            log.warning("no saved run config beside the checkpoint (<run>/.hydra/config.yaml): using data=%s "
                        "as composed from conf/eval.yaml and the command line",
                        data_override.value() if data_override else DEFAULT)
        given = any(o.key_or_group == "data.source.image_size" for o in parsed)
        source = cfg.data.get("source")
        if trained_image_size and not given and takes_image_size(source) and source.get("image_size") != trained_image_size:
            with open_dict(source):
                source.image_size = trained_image_size
            log.info("data.source.image_size=%d: the side the checkpoint was trained at (recorded in it)", trained_image_size)
        return cfg.data
    # Resolved inside the run's config, so ${seed} and the like take the run's values.
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    return apply_data_overrides(data, overrides)


def recorded_data_config(cfg: DictConfig, overrides: list[str], recorded: TrainedOn) -> DictConfig:
    """The data config a checkpoint without its run folder records it trained with, the data.*
    overrides on top; a recorded path that is not there (the data moved) and that no override
    replaces is refused, naming the setting to give."""
    data = apply_data_overrides(OmegaConf.create(recorded.config), overrides)
    for key in CWD_PATHS:
        value = OmegaConf.select(data, key.removeprefix("data."))
        if isinstance(value, str) and value == _recorded(recorded, key) and not os.path.exists(value):
            raise ValueError(
                f"ckpt_path={cfg.ckpt_path}: no saved run config is beside it (<run>/.hydra/config.yaml), and the "
                f"data it records it was trained with (data={recorded.data}, {key}={value}) is not there any more. "
                f"Give where that data is now: capgen-eval ckpt_path={shlex.quote(str(cfg.ckpt_path))} "
                f"{key}=<its folder> (the rest of its recorded data settings, its splits' among them, are kept), "
                f"or data=<name> for other data."
            )
    given = [o for o in overrides if o.lstrip("+~").startswith("data.")]
    where = [f"data.root={data.root}"] if data.get("root") else []
    splits = [f"splits by {_described(recorded.splits_by)}"] if recorded.splits_by else []
    log.info("data=%s as the checkpoint records it was trained with%s, no run config being beside it%s", recorded.data,
             f" ({'; '.join(where + splits)})" if where or splits else "", f"; {' '.join(given)} on top" if given else "")
    return data


def check_splits(cfg: DictConfig, data: DictConfig, recorded: TrainedOn) -> None:
    """ValueError, in one paragraph naming both, when `data` reads the checkpoint's own kind of
    data (its source class) with other split settings than it records it trained with."""
    source = data.get("source")
    if not recorded.splits_by or not recorded.config or source is None:
        return
    if source.get("_target_") != (recorded.config.get("source") or {}).get("_target_"):
        return  # other data altogether: its own splits are the only ones it has
    now = split_settings(source) or {}
    differ = {k: v for k, v in now.items() if k in recorded.splits_by and v != recorded.splits_by[k]}
    if not differ:
        return
    fix = " ".join(shlex.quote(f"data.{k}={_value(recorded.splits_by[k])}") for k in differ)
    checkpoint = cfg.get("ckpt_path") or cfg.get("run")
    raise ValueError(
        f"{'ckpt_path' if cfg.get('ckpt_path') else 'run'}={checkpoint}: it was trained on the splits that "
        f"{_described(recorded.splits_by)} {_draw(recorded.splits_by)} (recorded in the checkpoint), but this "
        f"evaluation's data settings give {_described(differ)}, which {_draw(differ)} other splits: the {cfg.split} "
        f"split would hold images the model was trained on, and its scores would be too high. Leave "
        f"{'this setting' if len(differ) == 1 else 'these settings'} out (the recorded ones are then used), or give "
        f"the recorded {'value' if len(differ) == 1 else 'ones'}: {fix}."
    )


def _draw(settings: dict) -> str:
    return "draws" if len(settings) == 1 else "draw"


def _recorded(recorded: TrainedOn, key: str):
    node = recorded.config or {}
    for part in key.removeprefix("data.").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _described(settings: dict | None) -> str:
    """`data.source.split_fractions={train:0.8,val:0.1,test:0.1} and data.source.split_seed=0`."""
    parts = [f"data.{k}={_value(v)}" for k, v in (settings or {}).items()]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def _value(value) -> str:
    """A setting's value as a Hydra override writes it ({train:0.8,val:0.2}, null)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)
