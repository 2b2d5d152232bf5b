"""The caches capgen-prepare writes and the datamodule reads, all in one folder `cache_dir`:

    vocab.json               the train split's vocabulary (Vocabulary.load reads it) and what
                             it was built from, so a stale one is noticed
    images_<split>.u8        uint8 rows (N, H, W, 3), C order, no header: np.memmap reads it
    images_<split>.json      its index (below)
    features_<split>.f16     float16 rows (N, P, D): a frozen encoder's features per image
    features_<split>.json    its index, which also names the encoder (its full config), the
                             fingerprint of its weights (encoder_weights, see
                             capgen.data.encoder_weights; absent in caches written before it) and
                             the precision it computed in (encoder_precision: bfloat16 or float32)
    bad_images.json          {split: [{image_id, error}]}: images left out under
                             data.on_bad_sample=skip

An index holds format, version, complete, split, source (a description of the source the rows
were made from: a cache with another description is stale), shape, dtype, image_ids, captions,
bad (rows whose image could not be read: left zero, never served) and, for a source that reads
image files, image_files (below).

The data, so that a cache made before the user edited a caption or replaced an image is not
used (stale, like one made from other settings): opening a cache with the source it stands
for (CachedImages(..., source=raw), write_image_cache) compares the index's image ids and
captions with those the source reads now, row by row, and the image files' record with the
files' state now. `image_files` is {"paths": a BLAKE2b of the files' paths in row order,
"sizes", "mtimes_ns": one per file}: a stat per file, nothing read (docs/performance.md has the
cost at COCO scale). A source names its files with `image_files()` (capgen.data.image_files:
one per item; coco.pt: the one file); a source of none (shapes, generated from its settings)
has no record and nothing to check. Rows listed as bad are left out of the comparison
(capgen-prepare reads them again, see _recheck_bad). A cache written before the record is read
without it (CachedImages.files_checked is False: its captions are checked, its images cannot
be) and capgen-prepare rebuilds it. A copy of the data with other modification times (cp
without -p) counts as changed: a stat cannot tell a copy from an edit of the same size.
A feature index copies its image cache's image ids, captions and record, so features made
from an image cache rebuilt since are made again. vocab.json's `built_from` holds a digest of
the train split's captions (captions_digest) for such sources, so it is never used with
captions other than those it was counted from.

Raw files rather than .npy: the index carries shape and dtype anyway, and a raw file is
resumed with a plain read-write memmap. Writing never leaves a file that looks complete:
rows go to `<data>.partial`, and `<data>.progress.json` records how many of them are on
disk (rewritten only after the rows are flushed); when all are, the data file is renamed
to its final name and only then is the index written (tmp file + os.replace). A cache is
complete iff its index exists and says so.

Checksums, so that a cache changed after it was written (images overwritten, vocab.json
edited) is refused instead of trained on: every JSON file capgen-prepare writes (vocab.json,
the indexes) carries a BLAKE2b `checksum` of its own content, and an index carries
`data_checksum`, a BLAKE2b of SAMPLE_BLOCKS blocks of SAMPLE_BYTES spread evenly over its data
file (the first and the last included) with the file's size. Opening a cache checks them all:
a few milliseconds whatever the cache's size (docs/performance.md has the figure at COCO
scale). The sample catches a file rewritten, zeroed or damaged in any large part, not one
edited row; the size check catches a truncated one. A mismatch is CacheDamaged, an error
naming the file and the capgen-prepare command that rebuilds it (which rebuilds it).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from ..vocab import Vocabulary
from .changes import setting_changes
from .encoder_weights import EncoderWeights, weights_fingerprint, weights_match
from .image_files import gc_paused
from .images import BadSampleError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: checksums
SAMPLE_BLOCKS, SAMPLE_BYTES = 256, 64 * 1024
IMAGES, FEATURES = "images", "features"
_SUFFIX = {IMAGES: ".u8", FEATURES: ".f16"}
_DTYPE = {IMAGES: "uint8", FEATURES: "float16"}
# Encoder arguments that change how its weights are obtained, not what it computes.
_NOT_ENCODER_IDENTITY = ("download",)


class CacheUnavailable(Exception):
    """A cache that is missing, unfinished or stale (made from other data); the message names the file."""


class CacheStale(CacheUnavailable):
    """A complete, intact cache made from other source settings or data than the source has now."""


class CacheDamaged(ValueError):
    """A complete cache whose files no longer match the checksums capgen-prepare recorded.
    `command`: the capgen-prepare command that rebuilds it (CaptionDataModule.prepare_command
    names the data config; `fixed_by` gives the error again with it)."""

    def __init__(self, path: Path, cache_dir: Path, what: str, command: str | None = None):
        self.path, self.cache_dir, self.what = path, cache_dir, what
        command = command or f"capgen-prepare data=<this data config> cache_dir={cache_dir}"
        super().__init__(
            f"{path}: {what}, so it no longer holds what capgen-prepare wrote (it was overwritten, edited or damaged "
            f"since), and training on it would change results without a word. Rebuild the cache with: {command} (it "
            f"rewrites what does not match), or train without data.cache_dir."
        )

    def fixed_by(self, command: str) -> CacheDamaged:
        return CacheDamaged(self.path, self.cache_dir, self.what, command)


def data_path(cache_dir: str | Path, kind: str, split: str) -> Path:
    return Path(cache_dir) / f"{kind}_{split}{_SUFFIX[kind]}"


def index_path(cache_dir: str | Path, kind: str, split: str) -> Path:
    return Path(cache_dir) / f"{kind}_{split}.json"


# ----- describing what a cache was made from ---------------------------------------------------

def _json_default(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return str(value)  # paths and anything else without a JSON form


def _plain(value):
    """A JSON-ready copy (configs become dicts, tuples lists, paths strings), so a value
    compares equal to itself written to an index and read back."""
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _with_defaults(fn: Callable, given: dict) -> dict:
    """`given` keyword arguments plus every default of fn's other parameters: configs list
    only the values that differ from the defaults, and two configs that build the same thing
    must compare equal."""
    params = inspect.signature(fn).parameters.items()
    return {**{k: p.default for k, p in params if p.default is not inspect.Parameter.empty}, **given}


def describe_source(factory: Callable[..., object], split: str, source) -> dict:
    """The source's class, split and size and the arguments its factory (a Hydra `_partial_`)
    was configured with: what a cache's rows were made from."""
    args = _with_defaults(factory.func, factory.keywords) if isinstance(factory, functools.partial) else {}
    return _plain({"source": _qualname(type(source)), "split": split, "size": len(source), "args": args})


def encoder_identity(config) -> dict:
    """An encoder's full config (defaults filled in), whatever import path names its class."""
    config = _plain(config)
    cls = hydra.utils.get_class(config.pop("_target_"))
    identity = _with_defaults(cls, config)
    for key in _NOT_ENCODER_IDENTITY:
        identity.pop(key, None)
    return _plain({"_target_": _qualname(cls), **identity})


# ----- the data a cache was made from ----------------------------------------------------------

def image_files(source) -> list[str] | None:
    """The files a source reads its images from (its `image_files()`, see the module docstring);
    None for a source of no files."""
    files = getattr(source, "image_files", None)
    return None if files is None else [str(f) for f in files()]


def files_record(paths: list[str]) -> dict:
    """{"paths", "sizes", "mtimes_ns"} of these files now (see the module docstring): one stat
    each, nothing read; a file that cannot be stat-ed has size and mtime -1."""
    sizes, mtimes = [], []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            sizes.append(-1)
            mtimes.append(-1)
        else:
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
    names = hashlib.blake2b("\0".join(paths).encode(), digest_size=16).hexdigest()
    return {"paths": names, "sizes": sizes, "mtimes_ns": mtimes}


def _digest(value) -> str:
    """A short BLAKE2b of a JSON value: what a partial file's identity holds of a large record."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).hexdigest()


def _some(items: list, k: int = 3) -> str:
    """The first k items, e.g. "a, b, c and 4 more"."""
    return ", ".join(map(str, items[:k])) + (f" and {len(items) - k} more" if len(items) > k else "")


def _check_data(path: Path, index: dict, source) -> None:
    """CacheStale (naming what changed) when the index's rows are not what `source` reads now:
    other image ids or captions, or image files changed since (see the module docstring)."""
    n = len(index["image_ids"])
    if len(source) != n:
        raise CacheStale(f"{path} holds {n} images, the source has {len(source)} now")
    with gc_paused():  # 123k lists at COCO scale: a collection would walk the whole index for each 700
        ids = [int(source.image_id(i)) for i in range(n)]
        captions = [list(source.captions(i)) for i in range(n)]
    if ids != index["image_ids"] or captions != index["captions"]:
        rows = [i for i in range(n) if ids[i] != index["image_ids"][i] or captions[i] != index["captions"][i]]
        raise CacheStale(
            f"{path} holds other captions or image ids than the data has now for {len(rows)} of its {n} images, "
            f"image id{'s' if len(rows) > 1 else ''} {_some([ids[i] for i in rows])}: the captions file changed since "
            "capgen-prepare made the cache"
        )
    files, recorded = image_files(source), index.get("image_files")
    if files is None or recorded is None:
        return  # no files (nothing to check), or a cache written before the record (see files_checked)
    now = files_record(files)
    if now == recorded:
        return
    if now["paths"] != recorded["paths"] or len(now["sizes"]) != len(recorded["sizes"]):
        raise CacheStale(f"{path} was made from other image files than the source reads now: their names differ")
    # Bad rows are never served; capgen-prepare reads their files again (_recheck_bad).
    bad = {b["row"] for b in index["bad"]} if len(files) == n else set()
    changed = [files[k] for k in range(len(files)) if k not in bad
               and (now["sizes"][k], now["mtimes_ns"][k]) != (recorded["sizes"][k], recorded["mtimes_ns"][k])]
    if changed and len(files) == 1:
        raise CacheStale(f"{path}: {files[0]}, the file its images were read from, changed since capgen-prepare made "
                         "the cache, its size or modification time")
    if changed:
        raise CacheStale(
            f"{path}: {len(changed)} of the {len(files)} image files it was made from changed since capgen-prepare "
            f"made the cache, their size or modification time: {_some(changed)}"
        )


def files_checked(index: dict, source) -> bool:
    """False for a cache written before capgen recorded its image files, opened for a source that
    has some: whether they changed since cannot be checked (its captions can)."""
    return source is None or "image_files" in index or image_files(source) is None


def captions_digest(source) -> str | None:
    """A BLAKE2b of a split's captions in row order (a cached split's as its index holds them, bad
    rows too: those capgen-prepare counted), which vocab.json records; None for a source of no
    files (its captions follow from its settings) and a cache written before image_files."""
    if isinstance(source, CachedImages):
        if "image_files" not in source.index:
            return None
        rows = source.index["captions"]
    elif image_files(source) is None:
        return None
    else:
        with gc_paused():  # see _check_data
            rows = [source.captions(i) for i in range(len(source))]
    return hashlib.blake2b(json.dumps(rows).encode(), digest_size=16).hexdigest()  # JSON: no two splits alike


# ----- checksums -----------------------------------------------------------------------------

def data_checksum(path: Path) -> str:
    """BLAKE2b of the file's size and SAMPLE_BLOCKS blocks spread evenly over it (see the module docstring)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    step = max((size - SAMPLE_BYTES) // max(SAMPLE_BLOCKS - 1, 1), 1)
    offsets = sorted({min(k * step, max(size - SAMPLE_BYTES, 0)) for k in range(SAMPLE_BLOCKS)})
    with open(path, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _content_checksum(value: dict) -> str:
    """BLAKE2b of a JSON file's content without its own `checksum` field."""
    text = json.dumps({k: v for k, v in value.items() if k != "checksum"}, sort_keys=True, default=_json_default)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _signed(value: dict) -> dict:
    return {**_plain(value), "checksum": _content_checksum(_plain(value))}


def _check_signed(path: Path, value: dict) -> None:
    if value.get("checksum") != _content_checksum(value):
        raise CacheDamaged(path, path.parent, "its content does not match the checksum it was written with")


# ----- small file helpers ----------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it and run capgen-prepare again") from e


def _write_json(path: Path, value: dict) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _write_json_if_changed(path: Path, value: dict, signed: bool = True) -> bool:
    """Leave an identical file untouched (its mtime too); True if it was written. signed: with
    its checksum (bad_images.json is not: a list for people, made again from the indexes)."""
    value = _signed(value) if signed else _plain(value)
    if _read_json(path) == value:
        return False
    _write_json(path, value)
    return True


# ----- vocabulary --------------------------------------------------------------------------

def save_vocab(cache_dir: str | Path, vocab: Vocabulary, recipe: dict) -> bool:
    """vocab.json: the Vocabulary.save fields plus `built_from` (what the datamodule builds
    it from: train source, min_freq, max_len). True if the file was (re)written."""
    return _write_json_if_changed(Path(cache_dir) / "vocab.json", {**vocab.to_dict(), "built_from": recipe})


def load_vocab(cache_dir: str | Path, recipe: dict) -> Vocabulary:
    path = Path(cache_dir) / "vocab.json"
    saved = _read_json(path)
    if saved is None:
        raise CacheUnavailable(f"{path} does not exist")
    _check_signed(path, saved)
    built_from, recipe = saved.get("built_from") or {}, _plain(recipe)
    if built_from != recipe:
        if {**built_from, "captions": None} == {**recipe, "captions": None}:
            raise CacheStale(f"{path} was counted from other captions of the train split than it has now (they "
                             "changed since capgen-prepare wrote it)")
        if not built_from:
            raise CacheStale(f"{path} records no settings it was built with (an earlier capgen wrote it)")
        raise CacheStale(f"{path} was built with other settings: {setting_changes(built_from, recipe)}")
    words = {k: v for k, v in saved.items() if k not in ("built_from", "checksum")}
    return Vocabulary.from_dict(words, source=str(path), fix="delete it and run capgen-prepare again")


def record_bad_images(cache_dir: str | Path, split: str, index: dict) -> bool:
    """Keep bad_images.json in step with the split's index; True if the file changed."""
    path = Path(cache_dir) / "bad_images.json"
    record = _read_json(path) or {}
    bad = [{"image_id": b["image_id"], "error": b["error"]} for b in index["bad"]]
    if bad:
        record[split] = bad
    else:
        record.pop(split, None)
    if not record and not path.exists():
        return False
    return _write_json_if_changed(path, record, signed=False)


# ----- reading -------------------------------------------------------------------------------

def _load_index(cache_dir: str | Path, kind: str, split: str, description: dict | None, source=None) -> dict:
    """The index of a complete cache, made from `description` and the data `source` reads now
    (each when given: see the module docstring); else CacheUnavailable (CacheStale: made from
    other settings or data)."""
    path = index_path(cache_dir, kind, split)
    index = _read_json(path)
    if index is None:
        raise CacheUnavailable(f"{path} does not exist")
    if not index.get("complete"):
        raise CacheUnavailable(f"{path} is not complete")
    if index.get("version") != FORMAT_VERSION:
        raise CacheUnavailable(f"{path} has format version {index.get('version')}, this capgen reads {FORMAT_VERSION}")
    _check_signed(path, index)
    if description is not None and index["source"] != _plain(description):
        raise CacheStale(f"{path} was made with other settings: {setting_changes(index['source'], _plain(description))}")
    data = data_path(cache_dir, kind, split)
    expected = int(np.prod(index["shape"])) * np.dtype(index["dtype"]).itemsize
    size = data.stat().st_size if data.exists() else None
    if size != expected:
        raise CacheUnavailable(f"{data} holds {size} bytes, its index {path} says {expected}")
    if data_checksum(data) != index["data_checksum"]:
        raise CacheDamaged(data, data.parent, f"its content does not match the checksum recorded in {path.name}")
    if source is not None:
        _check_data(path, index, source)  # last: the cache is what capgen-prepare wrote; is the data still that?
    return index


class CachedImages:
    """One split served from its image cache, in the source interface; bad rows are left out.

    `description`: the current source's, which the cache must have been made from;
    `vocabulary`: the raw source's own vocabulary, if it has one (see the datamodule);
    `source`: the raw source, whose data (ids, captions, image files) the cache must hold now.
    `files_checked` is False for a cache too old to record its image files (see the module docstring).
    """

    kind = IMAGES

    def __init__(
        self, cache_dir: str | Path, split: str, description: dict | None = None, vocabulary: Vocabulary | None = None,
        source=None,
    ):
        self.index = _load_index(cache_dir, self.kind, split, description, source)
        self.files_checked = files_checked(self.index, source)
        self.vocabulary = vocabulary
        self.path, self.index_file = data_path(cache_dir, self.kind, split), index_path(cache_dir, self.kind, split)
        self.shape, self.dtype = tuple(self.index["shape"]), np.dtype(self.index["dtype"])
        self.description, self.bad = self.index["source"], self.index["bad"]
        bad_rows = {b["row"] for b in self.bad}
        self._rows = [r for r in range(self.shape[0]) if r not in bad_rows]  # item i -> row
        self._data: np.memmap | None = None

    @property
    def rows(self) -> np.memmap:
        """All N rows, bad ones included, opened on first use (in each DataLoader worker)."""
        if self._data is None:
            self._data = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)
        return self._data

    def __getstate__(self) -> dict:
        # A worker maps the file itself; pickling the map would copy the whole array.
        return {**self.__dict__, "_data": None}

    def __len__(self) -> int:
        return len(self._rows)

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3), a copy: callers may write to it, as to a freshly loaded image."""
        return np.array(self.rows[self._rows[i]])

    def captions(self, i: int) -> list[str]:
        return list(self.index["captions"][self._rows[i]])

    def image_id(self, i: int) -> int:
        return self.index["image_ids"][self._rows[i]]


class CachedFeatures(CachedImages):
    """One split served from its feature cache: image(i) is the frozen encoder's (P, D) float16
    features of the image, which the Captioner takes in place of the image."""

    kind = FEATURES

    @property
    def encoder(self) -> dict:
        """The full config of the encoder that made the features."""
        return self.index["encoder"]

    @property
    def precision(self) -> str:
        """What the encoder computed the features in: "bfloat16" or "float32" (caches older than
        this record were all made in float32). Recorded, never refused: bf16 features train an
        fp32 run as well as fp32 ones (docs/performance.md has the difference they make)."""
        return self.index.get("encoder_precision", "float32")

    @property
    def encoder_weights(self) -> str | None:
        """The fingerprint of the weights that made the features (capgen.data.encoder_weights);
        None in a cache written before capgen recorded it."""
        return self.index.get("encoder_weights")

    def check_encoder(self, config, weights: EncoderWeights) -> bool:
        """Refuse features another encoder made, or the same encoder config with other weights
        (EncoderWeightsMismatch): the model would be trained or scored on them but run with its
        own encoder on new images. False when the cache is too old to say which weights made it
        (accepted; the caller says that they could not be checked), else True."""
        wanted = encoder_identity(config)
        if wanted != self.encoder:
            differ = sorted(k for k in wanted.keys() | self.encoder.keys() if wanted.get(k) != self.encoder.get(k))
            raise ValueError(
                f"{self.index_file}: the features were made by encoder {json.dumps(self.encoder)}, but the "
                f"model's encoder is {json.dumps(wanted)} (they differ in {', '.join(differ)}). Run "
                "capgen-prepare features=true with the training run's model/encoder settings, or "
                "train without data.use_features."
            )
        return weights_match(self.index_file, wanted["_target_"], self.encoder_weights, weights)


# ----- writing -------------------------------------------------------------------------------

class _RowWriter:
    """Rows of one cache file, written into `<data>.partial` and resumable after a crash.

    `<data>.progress.json` holds {identity, rows_done, bad}; `identity` (what the rows are
    made from, and their shape) must match for a partial file to be resumed, else it starts
    over. The record is rewritten only after the rows it counts are flushed to the file.
    """

    def __init__(self, final: Path, shape: tuple[int, ...], dtype: str, identity: dict):
        if shape[0] == 0:
            raise ValueError(f"{final}: the split has no images, there is nothing to cache")
        self.final, self.identity = final, _plain({**identity, "shape": shape})
        self.partial = final.with_name(final.name + ".partial")
        self.progress = final.with_name(final.name + ".progress.json")
        if final.exists():
            # Data under its final name without a complete index (the caller checked): a crash
            # between the rename and the index write, or a stale cache. Either way it is
            # partial again; the progress record decides whether anything is kept.
            os.replace(final, self.partial)
        state = _read_json(self.progress)
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        resume = (
            state is not None
            and state["identity"] == self.identity
            and self.partial.exists()
            and self.partial.stat().st_size == expected
        )
        self.rows_done = state["rows_done"] if resume else 0
        self.bad: list[dict] = state["bad"] if resume else []
        if not resume:
            _reserve(self.partial, expected)
        self.rows = np.memmap(self.partial, dtype=dtype, mode="r+", shape=shape)

    def checkpoint(self, rows_done: int) -> None:
        self.rows.flush()
        self.rows_done = rows_done
        _write_json(self.progress, {"identity": self.identity, "rows_done": rows_done, "bad": self.bad})

    def finish(self, index_file: Path, index: dict) -> dict:
        self.rows.flush()
        del self.rows  # unmap before the rename
        os.replace(self.partial, self.final)
        index = _signed({"version": FORMAT_VERSION, "complete": True, "shape": self.identity["shape"], "bad": self.bad,
                         "data_checksum": data_checksum(self.final), **index})
        _write_json(index_file, index)
        self.progress.unlink()
        return index


def _reserve(path: Path, size: int) -> None:
    """Make `path` a file of `size` bytes whose blocks are allocated on the disk now: a memory
    map writes into a sparse file's holes only when a page is flushed, and a full disk then
    kills the process with SIGBUS (no message, no cleanup). ValueError saying how much is needed."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(path.parent).free
            f.close()
            path.unlink(missing_ok=True)
            raise ValueError(
                f"{path.parent}: the cache file {path.name} needs {size / 1e9:.2f} GB and the disk has "
                f"{free / 1e9:.2f} GB free ({e.strerror}); free {max(size - free, 0) / 1e9:.2f} GB or more there, or "
                "give a cache_dir= on a larger disk. Nothing was left half-written."
            ) from None


def _complete_index(cache_dir: Path, kind: str, split: str, description: dict, source=None) -> dict | None:
    """The split's complete, current index (made from the data `source` reads now, when given,
    and recording its image files); otherwise None, with any stale index removed so that
    nothing claims completeness while the cache is rewritten."""
    try:
        index = _load_index(cache_dir, kind, split, description, source)
        if files_checked(index, source):
            return index
        log.info("%s: made again, written before capgen recorded the image files it is made from, which readers "
                 "check", index_path(cache_dir, kind, split))
    except CacheDamaged as e:
        log.warning("rebuilding: %s", e.args[0].split(",")[0])  # capgen-prepare is the rebuild
    except CacheStale as e:
        log.info("rebuilding the %s split's cache: %s", split, e)
    except CacheUnavailable:
        pass
    index_path(cache_dir, kind, split).unlink(missing_ok=True)
    return None


def _first_image_shape(source, split: str) -> tuple[int, int]:
    """(H, W) of the first image that loads; every image of a split must share it. A split with
    no images is the caller's to say (capgen-prepare leaves it out): here it would read as one
    whose every image is unreadable."""
    if len(source) == 0:
        raise ValueError(f"the {split} split has no images (its captions or annotation file gives none that split), so "
                         "there is nothing to cache")
    first = None
    for i in range(len(source)):
        try:
            return source.image(i).shape[:2]
        except ValueError as e:
            first = first or e  # the writing loop reports it, or skips it under on_bad_sample=skip
    raise ValueError(f"the {split} split: none of its {len(source)} images could be read, so there is nothing to "
                     f"cache; the first: {_what_is_wrong(first)}")


def _what_is_wrong(error: ValueError) -> str:
    """A bad image's file and reason without the source's fix, which is for training (it says to
    run capgen-prepare, which is what is running)."""
    return f"{error.path}: {error.reason}" if isinstance(error, BadSampleError) and error.reason else str(error)


def write_image_cache(
    source, cache_dir: str | Path, split: str, description: dict, on_bad_sample: str = "error", flush_every: int = 1000
) -> dict:
    """Write, finish or keep the split's image cache; returns its index.

    An image whose loading raises ValueError (e.g. a corrupt file) stops the run under
    on_bad_sample=error; under skip its row stays zero and is listed in the index's `bad`.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"data.on_bad_sample={on_bad_sample!r}: use error or skip")
    cache_dir = Path(cache_dir)
    files = image_files(source)
    index = _complete_index(cache_dir, IMAGES, split, description, source)
    if index is not None:
        return _recheck_bad(source, cache_dir, split, index, files)
    # Stat-ed before any image is read: a file changed while the rows are written counts as changed.
    record = None if files is None else files_record(files)
    h, w = _first_image_shape(source, split)
    n = len(source)
    # A partial file made from other image files than these starts over.
    identity = {"source": description, **({"image_files": _digest(record)} if record else {})}
    writer = _RowWriter(data_path(cache_dir, IMAGES, split), (n, h, w, 3), _DTYPE[IMAGES], identity)
    done = writer.rows_done
    try:
        for i in tqdm(range(writer.rows_done, n), total=n, initial=writer.rows_done, desc=f"images {split}", unit="img"):
            try:
                image = source.image(i)
            except ValueError as e:
                image_id = int(source.image_id(i))
                if on_bad_sample != "skip":
                    raise ValueError(
                        f"{split} image {i} (image id {image_id}): {_what_is_wrong(e)}; delete or replace the file, or set "
                        "data.on_bad_sample=skip to leave such images out (they are listed in the cache's "
                        "bad_images.json, and training with data.cache_dir leaves them out)."
                    ) from e
                writer.bad.append({"row": i, "image_id": image_id, "error": str(e)})
                image = 0  # a crashed run may have left bytes in this row
            else:
                if image.shape != (h, w, 3) or image.dtype != np.uint8:
                    raise ValueError(
                        f"{split} image {i} (image id {source.image_id(i)}) is {image.dtype} {image.shape}, "
                        f"but the image cache holds uint8 ({h}, {w}, 3) like the split's first image: "
                        "the source must resize every image to one size"
                    )
            writer.rows[i] = image
            done = i + 1
            if done % flush_every == 0:
                writer.checkpoint(done)
    finally:
        # Also on an error or Ctrl-C: a re-run resumes after the last row written.
        writer.checkpoint(done)
    meta = {
        "format": "capgen image cache",
        "split": split,
        "source": description,
        "dtype": _DTYPE[IMAGES],
        "image_ids": [int(source.image_id(i)) for i in range(n)],
        "captions": [list(source.captions(i)) for i in range(n)],
        **({"image_files": record} if record else {}),
    }
    return writer.finish(index_path(cache_dir, IMAGES, split), meta)


def _recheck_bad(source, cache_dir: Path, split: str, index: dict, files: list[str] | None = None) -> dict:
    """A complete cache's index after reading its bad images again: those the user has fixed
    since (they now load, at the cache's size) are written into their rows and leave the bad
    list (and so bad_images.json, which follows the index), and the record of their `files` is
    brought up to date. If this stops half-way, the data file no longer matches its checksum
    and the next capgen-prepare rebuilds the split."""
    fixed, stats = {}, {}
    record = index.get("image_files")
    per_row = record is not None and files is not None and len(files) == len(index["image_ids"])
    for b in index["bad"]:
        if per_row:
            stats[b["row"]] = files_record([files[b["row"]]])  # before it is read, as write_image_cache does
        try:
            image = source.image(b["row"])
        except ValueError:
            continue  # still unreadable
        if int(source.image_id(b["row"])) == b["image_id"] and image.shape == tuple(index["shape"][1:]):
            fixed[b["row"]] = image
    if not fixed:
        return index
    if per_row:
        record = {**record, "sizes": list(record["sizes"]), "mtimes_ns": list(record["mtimes_ns"])}
        for row in fixed:
            record["sizes"][row], record["mtimes_ns"][row] = stats[row]["sizes"][0], stats[row]["mtimes_ns"][0]
    data = data_path(cache_dir, IMAGES, split)
    rows = np.memmap(data, dtype=index["dtype"], mode="r+", shape=tuple(index["shape"]))
    for row, image in fixed.items():
        rows[row] = image
    rows.flush()
    del rows
    log.info("%s split: %d image(s) listed as bad read now (fixed since): added to the cache", split, len(fixed))
    index = _signed({**{k: v for k, v in index.items() if k != "checksum"}, "data_checksum": data_checksum(data),
                     "bad": [b for b in index["bad"] if b["row"] not in fixed],
                     **({"image_files": record} if record is not None else {})})
    _write_json(index_path(cache_dir, IMAGES, split), index)
    return index


def _encode_images(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, P, D), as Captioner.encode does."""
    return encoder(images).flatten(2).transpose(1, 2)


def computed_in(encoder: nn.Module) -> str:
    """The dtype an encoder's forward computes in outside any autocast: its set_precision's
    (capgen.models.encoder.ConvEncoder), else its weights'; e.g. "bfloat16" or "float32"."""
    dtype = getattr(encoder, "precision", None) or next(encoder.parameters()).dtype
    return str(dtype).removeprefix("torch.")


def write_feature_cache(
    cache_dir: str | Path,
    split: str,
    encoder: nn.Module,
    encoder_config,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    flush_every: int = 1000,
    weights: str | None = None,
) -> dict:
    """Write, finish or keep the split's feature cache from its (complete) image cache.

    weights: the encoder's weights_fingerprint, recorded in the index as encoder_weights (None:
    computed here; capgen-prepare computes it once for every split). A complete cache made by
    the same encoder config with other weights, or without that record, is made again.

    The encoder runs frozen: eval mode (BatchNorm uses its running statistics) under
    inference_mode, in batches of `batch_size`, in the precision it was set to (the index
    records it as encoder_precision). A complete cache made in another precision is kept (its
    features serve either way); a partial one is started over, so that no cache mixes both.
    Returns the index.
    """
    cache_dir = Path(cache_dir)
    try:
        images = CachedImages(cache_dir, split)
    except CacheUnavailable as e:
        raise ValueError(f"the feature cache is made from the image cache, which is unusable: {e}") from e
    identity, precision = encoder_identity(encoder_config), computed_in(encoder)
    weights = weights or weights_fingerprint(encoder)
    index = _complete_index(cache_dir, FEATURES, split, images.description)
    # The image cache's rows as the features were made from them: rebuilt since (the data changed) -> made again.
    same_images = index is not None and all(index.get(k) == images.index.get(k)
                                            for k in ("image_ids", "captions", "image_files"))
    if index is not None and index["encoder"] == identity and index.get("encoder_weights") != weights:
        log.info("%s: made again, %s", index_path(cache_dir, FEATURES, split),
                 "made by other weights of this encoder" if index.get("encoder_weights") else
                 "written before capgen recorded its encoder's weights, which readers check")
    elif index is not None and index["encoder"] == identity and not same_images:
        log.info("%s: made again, its image cache was rebuilt since (the data changed)", index_path(cache_dir, FEATURES, split))
    # Kept when made by this encoder and its weights from the image cache as it is now (a bad image fixed since: rebuilt).
    if (index is not None and index["encoder"] == identity and index.get("encoder_weights") == weights
            and index["bad"] == images.bad and same_images):
        made_in = index.get("encoder_precision", "float32")
        if made_in != precision:
            log.info("%s: kept, its features computed in %s (this encoder computes in %s); delete it to remake it",
                     index_path(cache_dir, FEATURES, split), made_in, precision)
        return index
    index_path(cache_dir, FEATURES, split).unlink(missing_ok=True)  # made by another encoder

    encoder = encoder.to(device).eval()
    n, h, w, _ = images.shape
    with torch.inference_mode():
        _, p, d = _encode_images(encoder, torch.zeros(1, 3, h, w, dtype=torch.uint8, device=device)).shape
        writer = _RowWriter(
            data_path(cache_dir, FEATURES, split), (n, p, d), _DTYPE[FEATURES],
            {"source": images.description, "encoder": identity, "encoder_weights": weights, "encoder_precision": precision,
             **({"image_files": _digest(images.index["image_files"])} if "image_files" in images.index else {})},
        )
        writer.bad = images.bad
        bad_rows = np.array([b["row"] for b in images.bad], dtype=np.int64)
        done, flushed = writer.rows_done, writer.rows_done
        try:
            with tqdm(total=n, initial=done, desc=f"features {split}", unit="img") as bar:
                for start in range(writer.rows_done, n, batch_size):
                    stop = min(start + batch_size, n)
                    batch = torch.from_numpy(np.array(images.rows[start:stop])).to(device).permute(0, 3, 1, 2)
                    feats = _encode_images(encoder, batch).to(torch.float16).cpu().numpy()  # (b, P, D)
                    feats[bad_rows[(bad_rows >= start) & (bad_rows < stop)] - start] = 0  # bad images stay zero
                    writer.rows[start:stop] = feats
                    done = stop
                    bar.update(stop - start)
                    if done - flushed >= flush_every:
                        writer.checkpoint(done)
                        flushed = done
        finally:
            writer.checkpoint(done)
    meta = {
        "format": "capgen feature cache",
        "split": split,
        "source": images.description,
        "dtype": _DTYPE[FEATURES],
        "encoder": identity,
        "encoder_weights": weights,
        "encoder_precision": precision,
        "image_ids": images.index["image_ids"],
        "captions": images.index["captions"],
        **({"image_files": images.index["image_files"]} if "image_files" in images.index else {}),
    }
    return writer.finish(index_path(cache_dir, FEATURES, split), meta)
