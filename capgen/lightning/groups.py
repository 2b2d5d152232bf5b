"""What CaptioningModule's setting groups (model.module.optimizer, .scheduler, .objective,
.val, .test) have in common: each is a frozen dataclass whose fields are the keys of its
config node (generated from the constructor's defaults by capgen.config.registry, so every
key overrides without `+`), whose range errors name `model.module.<group>.<key>`, and
which reads itself from a config node or a checkpoint's plain dict with `read_group`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def read_group(default: T, given: T | Mapping[str, Any] | None, where: str) -> T:
    """`given` as a group of default's class: an instance as it is; a mapping (a config node,
    or the plain dict a checkpoint keeps) laid over `default`, so that a key it lacks keeps
    the argument's default. A key the group does not have is a ValueError naming it."""
    cls = type(default)
    if given is None:
        return default
    if isinstance(given, cls):
        return given
    values = OmegaConf.to_container(given, resolve=True) if isinstance(given, DictConfig) else dict(given)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: no such setting; the settings of {where} are {', '.join(names)}.")
    return dataclasses.replace(default, **values)


def check_ranges(where: str, rules: tuple[tuple[str, Any, bool, str], ...]) -> None:
    """Raise a one-paragraph ValueError `<where>.<key>=<value>: must be <fix>.` for the first
    rule (key, value, in range, fix) whose value is out of range. Types are checked against
    the annotations at start-up (capgen.config.checks), ranges here."""
    for key, value, ok, fix in rules:
        if not ok:
            raise ValueError(f"{where}.{key}={value}: must be {fix}.")
