"""DecodeSettings: every decoding control in one checked, frozen object.

The same settings serve validation and test in training (`model.module.val.decode`,
`model.module.test.decode`), capgen-eval and capgen-caption (`decode.*`); they are plain
values, so they travel in checkpoints and metrics.json as a dict (`dataclasses.asdict`).

A setting that only one method reads and that differs from its neutral value under another
method is an error rather than silently ignored (temperature with method=beam, say), with
one exception: `beam_size`, which the default test decode and the presets set, so that a
node switched to method=sample or greedy may keep its beam_size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("greedy", "beam", "sample", "diverse_beam")
BEAM_METHODS = ("beam", "diverse_beam")
INT_KEYS = ("beam_size", "n_best", "groups", "min_len", "no_repeat_ngram_size", "top_k", "seed")
FLOAT_KEYS = ("diversity_strength", "length_penalty", "temperature", "top_p")
# Beyond a few the longest finished caption already wins; the bound keeps the beam's rank
# key (lp * log(length), beam._rank_key) far from float64's limits.
MAX_LENGTH_PENALTY = 1000
# What torch.Generator.manual_seed takes: an int64 or a uint64.
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class DecodeSettings:
    """How captions are decoded (capgen.models.search.decode).

    method: greedy | beam | sample | diverse_beam (Vijayakumar et al. 2016: the beam split
        into `groups` that each run a beam of beam_size/groups, each group's choices
        penalised by `diversity_strength` times the number of earlier groups that chose
        the same word at that step: Hamming diversity).
    beam_size: hypotheses kept by beam and diverse_beam (the others do not read it).
    n_best: captions returned per image: the n best (<= beam_size) of a beam, n draws of
        sample; greedy returns one.
    length_penalty: beam methods rank by log-prob / length ** length_penalty (0: raw log-prob).
    min_len: words before <end> may be emitted. max_len: at most this many words (null: the
        vocabulary's caption length, what the model was trained on).
    no_repeat_ngram_size: n > 0 blocks any word that would repeat an n-gram of the caption.
    suppress_unk: never emit <unk>.
    temperature, top_k (0: the whole vocabulary), top_p (nucleus; 1: off): sample only.
    seed: the draws of one evaluation come from a generator seeded with it.
    """

    method: str = "greedy"
    beam_size: int = 1
    n_best: int = 1
    groups: int = 1
    diversity_strength: float = 0.0
    length_penalty: float = 0.0
    min_len: int = 0
    max_len: int | None = None
    no_repeat_ngram_size: int = 0
    suppress_unk: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check(dataclasses.asdict(self), "decode")
        for key in FLOAT_KEYS:  # 1 given for 1.0 by a config
            object.__setattr__(self, key, float(getattr(self, key)))

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DecodeSettings, where: str = "decode") -> DecodeSettings:
        """Settings from a config node (missing keys take their defaults); errors name
        `where.<key>=<value>`, e.g. model.module.test.decode.top_p=1.5."""
        if isinstance(node, DecodeSettings):
            return node
        values = dict(node)
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise ValueError(
                f"{where}.{unknown[0]}: no such decoding setting; the settings are {', '.join(KEYS)} "
                "(capgen.models.search.settings.DecodeSettings)."
            )
        check({**dataclasses.asdict(cls()), **values}, where)
        return cls(**values)

    def with_max_len(self, vocab_max_len: int, where: str = "decode") -> DecodeSettings:
        """These settings with max_len given (null: `vocab_max_len`), checked against the
        vocabulary: a model writes no longer captions than it was trained on."""
        max_len = self.max_len if self.max_len is not None else vocab_max_len
        if max_len > vocab_max_len:
            raise ValueError(
                f"{where}.max_len={max_len}: the model was trained on captions of at most {vocab_max_len} words "
                f"(its vocabulary's max_len); give {where}.max_len<={vocab_max_len}, or null for {vocab_max_len}."
            )
        if self.min_len > max_len:
            raise ValueError(
                f"{where}.min_len={self.min_len}: longer than the longest caption, {max_len} words ({where}.max_len, "
                f"null: the vocabulary's); give {where}.min_len<={max_len}."
            )
        return dataclasses.replace(self, max_len=max_len)

    def describe(self) -> str:
        """A short name for tables and logs: `greedy`, `beam 3`, `beam 5, n_best 5, min_len 3`, ...
        (max_len left out: mostly the vocabulary's, and in metrics.json)."""
        head = f"{self.method} {self.beam_size}" if self.method in BEAM_METHODS else self.method
        if self.method == "diverse_beam":
            head += f" in {self.groups} groups, strength {self.diversity_strength:g}"
        neutral = DecodeSettings()
        shown = ("n_best", "length_penalty", "min_len", "no_repeat_ngram_size", "suppress_unk",
                 "temperature", "top_k", "top_p")
        extra = [f"{k} {getattr(self, k)}" for k in shown if getattr(self, k) != getattr(neutral, k)]
        if self.method == "sample":
            extra.append(f"seed {self.seed}")
        return ", ".join([head, *extra])


KEYS = tuple(f.name for f in dataclasses.fields(DecodeSettings))


def check(values: dict[str, Any], where: str) -> None:
    """Raise a one-paragraph ValueError naming `where.<key>=<value>` and the fix for the first
    setting in `values` (every key of DecodeSettings) that is wrong or contradicts another."""

    def fail(key: str, why: str) -> None:
        raise ValueError(f"{where}.{key}={values[key]!r}: {why}")

    v = values
    if v["method"] not in METHODS:
        fail("method", f"choose one of {', '.join(METHODS)}.")
    for key in INT_KEYS:
        if isinstance(v[key], bool) or not isinstance(v[key], int):
            fail(key, "give a whole number.")
    for key in FLOAT_KEYS:  # NaN passes every bound below, so it is refused here (an infinity too)
        if isinstance(v[key], bool) or not isinstance(v[key], (int, float)) or not math.isfinite(v[key]):
            fail(key, "give a finite number.")
    if v["max_len"] is not None and (isinstance(v["max_len"], bool) or not isinstance(v["max_len"], int)):
        fail("max_len", "give a whole number of words, or null for the vocabulary's caption length.")
    if not isinstance(v["suppress_unk"], bool):
        fail("suppress_unk", "give true or false.")

    method = v["method"]
    if v["beam_size"] < 1:
        fail("beam_size", "a beam holds at least 1 caption.")
    if v["n_best"] < 1:
        fail("n_best", "give at least 1 caption per image.")
    if method == "greedy" and v["n_best"] != 1:
        fail("n_best", f"greedy decoding gives one caption per image; for {v['n_best']} use {where}.method=beam "
                       f"(the n best of a beam) or {where}.method=sample (n draws), or give {where}.n_best=1.")
    if method in BEAM_METHODS and v["n_best"] > v["beam_size"]:
        fail("n_best", f"a beam of {where}.beam_size={v['beam_size']} returns at most {v['beam_size']} captions; give "
                       f"{where}.n_best<={v['beam_size']} or {where}.beam_size>={v['n_best']}.")
    if v["groups"] < 1:
        fail("groups", "give at least 1 group.")
    if v["diversity_strength"] < 0:
        fail("diversity_strength", "give a penalty >= 0 (0: the groups do not see each other).")
    if method == "diverse_beam" and v["beam_size"] % v["groups"]:
        fail("groups", f"the groups split the beam evenly, and {where}.beam_size={v['beam_size']} is no multiple of "
                       f"{v['groups']}; give a beam_size that {v['groups']} divides, or a divisor of {v['beam_size']}.")
    for key in ("groups", "diversity_strength"):
        if method != "diverse_beam" and v[key] != (1 if key == "groups" else 0):
            fail(key, f"only {where}.method=diverse_beam reads it; with {where}.method={method} give "
                      f"{where}.{key}={1 if key == 'groups' else 0}, or {where}.method=diverse_beam.")
    if not 0 <= v["length_penalty"] <= MAX_LENGTH_PENALTY:
        fail("length_penalty", f"give a value from 0 to {MAX_LENGTH_PENALTY} (0 ranks by the raw log-probability, "
                               "larger favours longer captions).")
    if method not in BEAM_METHODS and v["length_penalty"] != 0:
        fail("length_penalty", f"it ranks the hypotheses of a beam, and {where}.method={method} has none to rank; "
                               f"give {where}.length_penalty=0 or {where}.method=beam.")
    if v["min_len"] < 0:
        fail("min_len", "give a number of words >= 0.")
    if v["max_len"] is not None and v["max_len"] < 1:
        fail("max_len", "give at least 1 word, or null for the vocabulary's caption length.")
    if v["max_len"] is not None and v["min_len"] > v["max_len"]:
        fail("min_len", f"longer than {where}.max_len={v['max_len']}; give {where}.min_len<={v['max_len']}.")
    if v["no_repeat_ngram_size"] < 0:
        fail("no_repeat_ngram_size", "give n >= 1 to block repeated n-grams, or 0 for none.")
    if v["temperature"] <= 0:
        fail("temperature", "give a temperature > 0 (use method=greedy for the most likely word).")
    if v["top_k"] < 0:
        fail("top_k", "give k >= 1 to draw among the k most likely words, or 0 for the whole vocabulary.")
    if not 0 < v["top_p"] <= 1:
        fail("top_p", "give a probability mass in (0, 1] (1: no nucleus cut).")
    if not SEED_RANGE[0] <= v["seed"] <= SEED_RANGE[1]:  # checked for every method: the seed is given to a generator
        fail("seed", "give a whole number from -2**63 to 2**64-1 (what a torch random generator takes).")
    for key, neutral in (("temperature", 1), ("top_k", 0), ("top_p", 1)):
        if method != "sample" and v[key] != neutral:
            fail(key, f"only {where}.method=sample reads it; with {where}.method={method} give {where}.{key}={neutral}, "
                      f"or {where}.method=sample.")
