"""Settings checked against the annotations of the constructors they are given to, before
anything is built: `model.module.optimizer.lr=abc` stops the command at start-up with the
key, the value and an example, instead of failing deep inside the optimizer an epoch later.

`check_types(node, key)` walks a Hydra node that names a `_target_` (and the nodes with
their own `_target_` inside it, such as `data.source`) and checks each value given against
the annotation of the target's argument of that name: whole numbers, numbers, booleans,
strings, one of a Literal's values, None where Optional, lists of those. Annotations that
are not plain data (a class, a callable) are not checked: their constructors check them.
An argument annotated with a group of settings, a dataclass (CaptioningModule's
`objective`: capgen.lightning.objective.ObjectiveSettings), has a node whose keys are the
group's fields: they are checked against the fields' annotations, nested groups too.
Ranges are the constructors' own business (each raises a ValueError naming its setting).

`check_numbers(cfg)` is the one rule for numbers that are not numbers: every float anywhere
in a command's composed config (model, data, trainer, callbacks, decode, the command's own
settings, and whatever a recipe sets) must be finite. NaN compares False with every bound,
so `length_penalty=nan` would pass each range check and change results without a word; an
infinity fails deep inside torch naming no setting. No capgen setting gives NaN or an
infinity a meaning (null is how a setting says "none" or "off" where it allows it), so the
rule has no exceptions. Each command's settings check calls it first.

`check_keys(node, key)` refuses a key that the target's constructor does not take
(`+model.decoder.hiden_dim=3`), naming the close match, before the constructor's TypeError
would; `check_command_keys` does so for the command line before Hydra writes a run folder.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import itertools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

_UNCHECKED = object()  # an annotation that is not plain data


def check_types(node: DictConfig, key: str) -> None:
    """Raise a one-paragraph ValueError for the first value in `node` (at config path `key`)
    that its target's annotation does not allow."""
    values = OmegaConf.to_container(node, resolve=True)
    _check(values, key)


class UnknownSetting(ValueError):
    """A key that the constructor it would be given to does not take."""


class UnlistedSetting(ValueError):
    """A key that its constructor takes but no config lists, given without the + that adds it."""


def check_keys(node: DictConfig, key: str) -> None:
    """Raise UnknownSetting for the first key in `node` (at config path `key`), or in a node
    with its own `_target_` inside it, that its target's constructor does not take."""
    _check_keys(OmegaConf.to_container(node, resolve=False), key)


def _check_keys(values: dict, key: str, schema: _Schema | None = None) -> None:
    schema = schema or _Schema.of(values)
    if schema is None:
        return
    names = schema.names
    for name, value in values.items():
        if name.startswith("_"):  # Hydra's own: _target_, _recursive_, _partial_, ...
            continue
        inner = schema.inner(name, value)
        if inner is not None:
            _check_keys(value, f"{key}.{name}", inner)
        elif name not in names and not schema.takes_any:
            close = difflib.get_close_matches(name, names, n=1) or schema.holding(name)
            hint = f"Did you mean {key}.{close[0]}? " if close else ""
            known = f"Its settings are: {', '.join(names)}." if len(names) <= 12 else f"Its settings are the arguments of {schema.target}."
            raise UnknownSetting(
                f"{key}.{name}: {schema.target} takes no setting '{name}', so the run would fail when it is built. "
                f"{hint}{known}"
            )


@dataclasses.dataclass
class _Schema:
    """What a config node is given to: a `_target_`'s constructor, or a group of settings (a
    dataclass such as capgen.lightning.objective.ObjectiveSettings) that a constructor argument
    is annotated with, whose node holds the group's fields (nested groups inside it too)."""

    target: str  # its name in messages
    names: list[str]  # the settings it takes
    takes_any: bool  # **kwargs
    hints: dict[str, Any]  # name -> annotation
    defaults: dict[str, Any]  # name -> default, where there is one

    @classmethod
    def of(cls, values: dict) -> _Schema | None:
        """The schema of a node with a `_target_`, else None."""
        target = values.get("_target_")
        if not isinstance(target, str):
            return None
        fn = get_object(target)
        init = fn.__init__ if inspect.isclass(fn) else fn
        params = inspect.signature(init).parameters
        names = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return cls(target, names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()),
                   _hints(init), {n: p.default for n, p in params.items() if p.default is not p.empty})

    def inner(self, name: str, value: Any) -> _Schema | None:
        """The schema of the node `value` at `name`: its own `_target_`'s, or the group that
        `name`'s annotation names (defaults: those of this node's default for it), else None."""
        if not isinstance(value, dict):
            return None
        if "_target_" in value:
            return _Schema.of(value)
        hint = self.hints.get(name)
        group = next((h for h in (hint, *typing.get_args(hint)) if isinstance(h, type) and dataclasses.is_dataclass(h)),
                     None)
        if group is None:
            return None
        default = self.defaults.get(name)
        default = default if isinstance(default, group) else group()
        fields = {f.name: getattr(default, f.name) for f in dataclasses.fields(group)}
        return _Schema(f"{group.__module__}.{group.__qualname__}", list(fields), False, _hints(group), fields)


    def holding(self, name: str) -> list[str]:
        """[`group.name`] for the first group among this node's settings that has a setting
        `name` (model.module.lr -> optimizer.lr), else []."""
        for group in self.names:
            inner = self.inner(group, {})
            if inner is not None and name in inner.names:
                return [f"{group}.{name}"]
        return []


def _hints(fn: Any) -> dict[str, Any]:
    """fn's annotations, evaluated; none where they cannot be (a library's own forward references)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unchecked then, as an annotation that is not plain data
        return {}


def check_command_keys(args: list[str], config_name: str = "train") -> None:
    """UnknownSetting, before Hydra starts (and so before it makes a run folder), for a key on
    the command line (`args`, sys.argv[1:]) that its constructor does not take: one added with
    `+` (`+model.decoder.hiden_dim=3`), which Hydra would let through into a TypeError once the
    run folder is written, and one without, for which Hydra's own error says to add `+`, which
    would not help. A sweep (-m) is checked job by job, each listed value of its sweeps
    (`model=rnn,attn`, `seed=range(3)`) composed as its job would be, up to SWEEP_JOBS_CHECKED
    jobs, so that a key one model takes and another does not is refused before the first job
    writes anything; values drawn by a search (`interval(...)`) are checked by each job
    (capgen.commands.train.fit.check_train_config). Other errors are left to Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from .argv import command_overrides

    try:
        parsed = OverridesParser.create().parse_overrides(command_overrides(args))
    except HydraException:
        return  # Hydra reports a malformed override itself
    # Hydra's settings do not change what is built; groups (model=lstm) are Hydra's to check.
    keep = [o for o in parsed if not o.key_or_group.startswith(("hydra.", "hydra/"))]
    if not any(not _is_group(o.key_or_group) and not o.is_delete() for o in keep):
        return
    # Each key's value as typed, a sweep's whole list included, for the advice to repeat.
    typed = {o.input_line.split("=", 1)[0]: o.input_line.split("=", 1)[1] for o in keep if "=" in o.input_line}
    for job in itertools.islice(_sweep_jobs(keep), SWEEP_JOBS_CHECKED):
        _check_job_keys(job, config_name, typed)


SWEEP_JOBS_CHECKED = 64  # a larger grid's other jobs are checked as each starts


def _sweep_jobs(overrides: list) -> typing.Iterator[list[str]]:
    """Each job's override lines: one value of every listed sweep (the cartesian product, as
    Hydra's basic sweeper runs them); a sweep whose values are drawn (an interval) is left out."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    swept = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
             for o in overrides if o.is_sweep_override() and o.is_discrete_sweep()]
    for values in itertools.product(*swept):
        yield [*fixed, *values]


# The nodes without a _target_ whose entries a command line adds with + (a callback, a logger:
# each entry has its own _target_); under any other such node (decode, paths, a command's own
# top-level settings) a key added with + lists a setting nothing reads.
OPEN_NODES = ("callbacks", "logger")


def _check_job_keys(lines: list[str], config_name: str, typed: dict[str, str]) -> None:
    """check_command_keys for one job's override lines; `typed`: each key's value as the
    command line gives it (`64,96` for a sweep), which the advice repeats."""
    keys = [line.split("=", 1)[0] for line in lines if not line.startswith("~")]
    keys = [k for k in keys if not _is_group(k.lstrip("+"))]  # a group's choice is Hydra's to check
    if not keys:
        return
    cfg, unknown = _compose(config_name, lines)
    if unknown is not None:  # Hydra refused a key that no node lists: compose without it, then name it
        cfg, again = _compose(config_name, [line for line in lines if line.split("=", 1)[0].lstrip("+") != unknown])
        if cfg is None or again is not None:
            return
        keys = [unknown]
    if cfg is None:
        return
    for given in keys:
        key = given.lstrip("+")
        parent = key.rpartition(".")[0]
        while parent:  # the innermost node with a _target_ that holds the key
            node = OmegaConf.select(cfg, parent)
            if isinstance(node, DictConfig) and "_target_" in node:
                values = OmegaConf.to_container(node, resolve=False)
                _add_key(values, key[len(parent) + 1:].split("."))
                _check_keys(values, parent)
                if key == unknown and not given.startswith("+"):
                    # The constructor takes it, but no config lists it: Hydra's advice is right, said in one paragraph.
                    value = typed.get(given) or next(line.split("=", 1)[1] for line in lines if line.split("=", 1)[0] == given)
                    raise UnlistedSetting(
                        f"{key}: {node._target_} takes {key.rpartition('.')[2]}, but the config does not list it, so "
                        f"Hydra cannot override it. Add it with a +: +{key}={value}. Nothing was written.")
                break
            parent = parent.rpartition(".")[0]
        else:  # under no constructor: unknown when Hydra refused it, or + added it (+ fails on a listed key)
            added = given.startswith("+") and not given.startswith("++")
            if (key == unknown or added) and not key.startswith(OPEN_NODES):
                if added:  # the config as it is without the key, to name what it does list
                    cfg, _ = _compose(config_name, [line for line in lines if line.split("=", 1)[0] != given])
                _refuse_unlisted(cfg, key, config_name)


def _is_group(key: str) -> bool:
    """A config group (`data`, `model/encoder`): its value chooses a YAML file."""
    from . import CONF_DIR

    return "/" in key or (Path(CONF_DIR) / key).is_dir()


def _refuse_unlisted(cfg: DictConfig | None, key: str, config_name: str) -> None:
    """UnknownSetting for `key`, which the command's config `cfg` does not list, naming the
    closest setting of the innermost node it would go in that exists."""
    parts = key.split(".")
    depth = len(parts) - 1
    while depth and not isinstance(OmegaConf.select(cfg, ".".join(parts[:depth])) if cfg else None, DictConfig):
        depth -= 1
    parent = ".".join(parts[:depth])
    node = OmegaConf.select(cfg, parent) if parent else cfg
    names = [k for k in node.keys() if k != "hydra"] if node is not None else []
    close = difflib.get_close_matches(parts[depth], names, n=1)
    hint = f"Did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    where = f"{parent}'s settings" if parent else f"capgen-{config_name}'s settings"
    raise UnknownSetting(f"{key}: {parts[depth]} is not one of {where}, so nothing would read it (and Hydra's advice "
                         f"to add + would not help). {hint}Nothing was written; give the setting's right name.")


def _add_key(values: dict, path: list[str]) -> None:
    """The key at `path` (a.b.c) in `values` (None where it is missing), so that a misspelt key
    inside a group's node (model.module.objective.scst.samplez) is checked where it would go."""
    for name in path[:-1]:
        values = values.get(name)
        if not isinstance(values, dict):
            return
    values.setdefault(path[-1], None)


_NOT_LISTED = re.compile(r"Could not override '([^']+)'")


def _compose(config_name: str, overrides: list[str]) -> tuple[DictConfig | None, str | None]:
    """(the composed config, None), or (None, the key) when Hydra refuses an override whose key
    the config does not list, or (None, None) for any other composition error."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from . import CONF_DIR

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name, overrides=overrides), None
    except ConfigCompositionException as e:
        found = _NOT_LISTED.search(str(e))
        return None, found.group(1) if found else None


def check_values(cfg: DictConfig, hints: dict[str, Any]) -> None:
    """The same check for a command's own settings, which go to no constructor (capgen-caption's
    `figures`, capgen-prepare's `features`): `hints` maps each key to its type."""
    for key, hint in hints.items():
        value = OmegaConf.select(cfg, key)
        if not _fits(value, hint):
            raise ValueError(f"{key}={value!r}: must be {_describe(hint)}.")


def check_numbers(cfg: DictConfig) -> None:
    """Raise a one-paragraph ValueError naming the first float setting of `cfg` that is NaN or
    an infinity, with its default where a constructor gives one. Values are read as written
    (unresolved): an interpolation takes its number from a key that is checked itself."""
    values = OmegaConf.to_container(cfg, resolve=False)
    for key, value, schema in _floats(values, "", None):
        if math.isfinite(value):
            continue
        what = "not a number (NaN)" if math.isnan(value) else "an infinity"
        default = _default(schema, key.rpartition(".")[2])
        example = f", e.g. {key}={_show(default)} (the default)" if default is not None else ""
        raise ValueError(f"{key}={value}: must be a finite number, and this is {what}; no capgen setting gives "
                         f"NaN or an infinity a meaning (null means none or off where a setting allows it){example}.")


def _floats(value: Any, key: str, schema: _Schema | None):
    """(key, value, the schema of the node holding it) for every float in a container."""
    if isinstance(value, dict):
        for name, item in value.items():
            inner = schema
            if isinstance(item, dict):
                try:  # only to offer a default in the message: a target that does not import offers none
                    inner = schema.inner(name, item) if schema is not None else _Schema.of(item)
                except Exception:  # noqa: BLE001
                    inner = None
            yield from _floats(item, f"{key}.{name}" if key else str(name), inner)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _floats(item, f"{key}[{i}]", schema)
    elif isinstance(value, float):
        yield key, value, schema


def _default(schema: _Schema | None, name: str) -> Any:
    """The finite number the constructor or group of `schema` defaults setting `name` to, else None."""
    default = schema.defaults.get(name) if schema is not None else None
    finite = isinstance(default, (int, float)) and not isinstance(default, bool) and math.isfinite(default)
    return default if finite else None


def _check(values: dict, key: str, schema: _Schema | None = None) -> None:
    schema = schema or _Schema.of(values)
    if schema is None:
        return
    for name, value in values.items():
        if name.startswith("_"):
            continue
        inner = schema.inner(name, value)
        if inner is not None:
            _check(value, f"{key}.{name}", inner)
            continue
        hint = schema.hints.get(name)
        if hint is None or _fits(value, hint):
            continue
        default = schema.defaults.get(name)
        example = "" if default is None else f", e.g. {key}.{name}={_show(default)} (the default)"
        raise ValueError(f"{key}.{name}={value!r}: must be {_describe(hint)}{example}.")


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0]
        return all(_fits(v, item) for v in value)
    if hint in (dict, list) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, list if hint is list else dict)
    return True  # a class, a callable, a protocol: checked by whoever receives it


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(a) for a in args]
        return " or ".join(dict.fromkeys(words))  # in order, without repeats
    if origin is typing.Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return f"a list of {_describe(args[0])} values, e.g. [a,b]"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            type(None): "null", dict: "a mapping {key: value}", list: "a list [a,b]"}.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any) -> str:
    """A value as it is written in an override."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)
