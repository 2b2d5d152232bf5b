"""What differs between the settings a cache was made from and the current ones, named as the
data.* settings a user gives, each with both values: the one line a stale cache is told in
(capgen.data.cache), instead of both descriptions whole.

A source's description (capgen.data.cache.describe_source) is {source: its class, split, size:
its images, args: its factory's arguments}; vocab.json's recipe is {source: the train split's
description, captions: their digest, min_freq, max_len}.
"""

from __future__ import annotations

import json

# Source arguments the datamodule binds for every split (CaptionDataModule's root, on_bad_sample):
# data.<name> is the place to give them.
_DATAMODULE_ARGS = ("root", "on_bad_sample")


def setting_changes(then: dict, now: dict) -> str:
    """e.g. "data.min_freq 1 then, 2 now; data.source.image_size 256 then, 64 now" (the
    differences of two source descriptions or two vocabulary recipes; "" when there are none)."""
    return "; ".join(f"{_name(path)} {_shown(a)} then, {_shown(b)} now" for path, a, b in _differences(then, now, ()))


def _differences(then, now, path: tuple) -> list[tuple[tuple, object, object]]:
    if isinstance(then, dict) and isinstance(now, dict):
        return [d for key in sorted(set(then) | set(now), key=str)
                for d in _differences(then.get(key, _UNSET), now.get(key, _UNSET), (*path, key))]
    return [] if then == now else [(path, then, now)]


class _Unset:
    def __repr__(self) -> str:
        return "unset"


_UNSET = _Unset()


def _name(path: tuple) -> str:
    """The data.* setting of a description's field (a recipe's `source` is the train split's)."""
    if path[:1] == ("source",) and len(path) > 1:  # a vocabulary recipe's train source
        return _name(path[1:]).replace("the split's", "the train split's")
    if path[:1] == ("args",) and len(path) > 1:
        prefix = "data." if path[1] in _DATAMODULE_ARGS and len(path) == 2 else "data.source."
        return prefix + ".".join(map(str, path[1:]))
    return {("size",): "the split's image count", ("source",): "the source (data=)", ("split",): "the split",
            ("captions",): "the train captions' digest"}.get(path, "data." + ".".join(map(str, path)))


def _shown(value) -> str:
    return repr(value) if value is _UNSET else json.dumps(value) if not isinstance(value, str) else value
