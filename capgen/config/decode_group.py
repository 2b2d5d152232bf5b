"""Decode settings as the commands take them (capgen.models.search.settings.DecodeSettings).

- capgen-train: `model.module.val.decode` and `model.module.test.decode`, nodes of the
  module's generated config (every key overridable without `+`).
- capgen-eval and capgen-caption: the `decode` config group. Each non-null key of the
  chosen node is laid over the run's test decode (the checkpoint's `test.decode`): the
  default `decode=run` is all null (the run's settings, `decode.beam_size=5` changes one of
  them), and a preset (`decode=greedy|beam|sample|diverse_beam`, conf/decode/) gives every
  key but max_len (null: the run's). capgen-caption defaults to `decode=beam`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..models.search.settings import BEAM_METHODS, DecodeSettings

# The settings that constrain the captions of every method (the demo keeps them when its page switches method).
CONSTRAINT_KEYS = ("min_len", "max_len", "no_repeat_ngram_size", "suppress_unk")


def config_nodes() -> dict[str, dict[str, Any]]:
    """The generated nodes of the `decode` group: `_settings` (every key at its default, the
    presets' base) and `run` (every key null: the run's test decode)."""
    defaults = dataclasses.asdict(DecodeSettings())
    return {"_settings": defaults, "run": dict.fromkeys(defaults)}


def command_settings(cfg: DictConfig, run: DecodeSettings, vocab_max_len: int) -> DecodeSettings:
    """capgen-eval's and capgen-caption's decode settings: the run's test decode `run` with
    cfg.decode's non-null keys on top. Errors name `decode.<key>=<value>`."""
    given = {k: v for k, v in OmegaConf.to_container(cfg.decode, resolve=True).items() if v is not None}
    values = {**dataclasses.asdict(run), **given}
    if given.get("beam_size", 1) != 1 and values["method"] not in BEAM_METHODS:
        # the one key other methods ignore: asked for on its own, it would change nothing
        raise ValueError(
            f"decode.beam_size={given['beam_size']}: decode.method={values['method']} (the run's test decode, unless "
            "decode.method= or decode=<preset> is given) has no beam; give decode.method=beam as well."
        )
    return DecodeSettings.from_config(values).with_max_len(vocab_max_len)
