"""Decode settings as the commands take them (capgen.models.search.settings.DecodeSettings).

- capgen-train: `model.module.val_decode` and `model.module.test_decode`, nodes of the
  module's generated config (every key overridable without `+`).
- capgen-eval and capgen-caption: the `decode` config group. Each non-null key of the
  chosen node is laid over the run's test decode (the checkpoint's `test_decode`): the
  default `decode=run` is all null (the run's settings, `decode.beam_size=5` changes one of
  them), and a preset (`decode=greedy|beam|sample|diverse_beam`, conf/decode/) gives every
  key but max_len (null: the run's). capgen-caption defaults to `decode=beam`.
- Checkpoints written before these settings carry the module's old beam_size,
  test_beam_size, length_penalty and max_decode_len instead: `upgrade_hparams` maps them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..models.search.settings import BEAM_METHODS, DecodeSettings

log = logging.getLogger(__name__)

OLD_KEYS = ("beam_size", "test_beam_size", "length_penalty", "max_decode_len")
CONSTRAINT_KEYS = ("min_len", "max_len", "no_repeat_ngram_size", "suppress_unk")


def config_nodes() -> dict[str, dict[str, Any]]:
    """The generated nodes of the `decode` group: `_settings` (every key at its default, the
    presets' base) and `run` (every key null: the run's test decode)."""
    defaults = dataclasses.asdict(DecodeSettings())
    return {"_settings": defaults, "run": dict.fromkeys(defaults)}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's module hyper-parameters with the old decoding keys (beam_size: the
    validation beam, 1 for greedy; test_beam_size; length_penalty for both; max_decode_len)
    turned into val_decode and test_decode; newer hyper-parameters are returned as they are."""
    if not any(k in hparams for k in OLD_KEYS):
        return hparams
    hparams = dict(hparams)
    old = {k: hparams.pop(k) for k in OLD_KEYS if k in hparams}
    penalty, max_len = old.get("length_penalty", 0.0), old.get("max_decode_len")

    def settings(beam: int) -> dict[str, Any]:
        if beam == 1:  # a beam of one was greedy decoding, which has no ranking to penalise
            return {"method": "greedy", "max_len": max_len}
        return {"method": "beam", "beam_size": beam, "length_penalty": penalty, "max_len": max_len}

    hparams.setdefault("val_decode", settings(old.get("beam_size", 1)))
    hparams.setdefault("test_decode", settings(old.get("test_beam_size", 3)))
    return hparams


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """A run's saved overrides (.hydra/overrides.yaml) with the old decoding keys
    (model.module.beam_size=2, ...) turned into val_decode/test_decode ones as upgrade_hparams
    turns a checkpoint's, so that `capgen-train resume=<run>` of a run started before the
    decode settings composes; other overrides are returned as they are, in order."""
    prefix = "model.module."
    old: dict[str, Any] = {}
    kept = []
    for line in overrides:
        key, _, value = line.partition("=")
        if key.startswith(prefix) and key[len(prefix):] in OLD_KEYS:
            old[key[len(prefix):]] = None if value == "null" else float(value) if key.endswith("penalty") else int(value)
        else:
            kept.append(line)
    if not old:
        return overrides
    new = upgrade_hparams(old)
    added = [f"{prefix}{stage}.{k}={v}" for stage in ("val_decode", "test_decode") for k, v in new[stage].items()
             if v is not None]
    log.info("the run's old decoding overrides %s are read as %s", old, added)
    return kept + added


def command_settings(cfg: DictConfig, run: DecodeSettings, vocab_max_len: int) -> DecodeSettings:
    """capgen-eval's and capgen-caption's decode settings: the run's test decode `run` with
    cfg.decode's non-null keys on top, then the old `beam_size=N` (if given) as
    decode.method=beam decode.beam_size=N (1: greedy), keeping the constraints and the run's
    length penalty. Errors name `decode.<key>=<value>`."""
    given = {k: v for k, v in OmegaConf.to_container(cfg.decode, resolve=True).items() if v is not None}
    values = {**dataclasses.asdict(run), **given}
    if given.get("beam_size", 1) != 1 and values["method"] not in BEAM_METHODS:
        # the one key other methods ignore: asked for on its own, it would change nothing
        raise ValueError(
            f"decode.beam_size={given['beam_size']}: decode.method={values['method']} (the run's test decode, unless "
            "decode.method= or decode=<preset> is given) has no beam; give decode.method=beam as well."
        )
    beam = cfg.get("beam_size")
    if beam is not None:
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam_size={beam}: a beam holds at least 1 caption; give decode.beam_size=N (or "
                             "decode.method=greedy)")
        kept = {k: values[k] for k in CONSTRAINT_KEYS}
        if beam == 1:
            values = {**kept, "method": "greedy"}
            log.info("beam_size=1 is the old name of decode.method=greedy")
        else:
            penalty = values["length_penalty"] if values["method"] in BEAM_METHODS else 0.0
            values = {**kept, "method": "beam", "beam_size": beam, "length_penalty": penalty}
            log.info("beam_size=%d is the old name of decode.method=beam decode.beam_size=%d", beam, beam)
    return DecodeSettings.from_config(values).with_max_len(vocab_max_len)
