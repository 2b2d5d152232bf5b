"""The EECS 498 course file `coco.pt` as a caption source.

The file is one `torch.save`d dict:
    train_images, val_images      uint8 (N, 3, 112, 112)
    train_captions, val_captions  int64 (N, 17): <START>, up to 15 words, <END>, <NULL> padding
    vocab                         {"idx_to_token": [...], "token_to_idx": {...}} with
                                  <NULL> 0, <START> 1, <END> 2, <UNK> 3
Row r of a split's captions describes row r of its images, one caption per row, so an image
with five captions is stored as five rows of identical pixels. The source groups such rows
back into one image with all its captions, so evaluation sees each image once and scores it
against every reference.

The file's ids are kept: its specials sit exactly where capgen's <pad>, <start>, <end>, <unk>
do, so the vocabulary only renames them, and `vocabulary.encode(caption)` gives back the
caption's row up to padding.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..tokenizer import tokenize
from ..vocab import SPECIALS, Vocabulary

log = logging.getLogger(__name__)

FILE_SPECIALS = ("<NULL>", "<START>", "<END>", "<UNK>")  # same ids as capgen's SPECIALS
MAX_WORDS = 15  # words per caption in the course format (17 columns less <START> and <END>)
# The file has no test split: "test" reads val, under val's ids, as they are the same images.
SPLIT_FIELDS = {"train": "train", "val": "val", "test": "val"}
# image_id = offset + the image's first row, so train and val ids never collide (the course
# file has 10,000 train rows, far below the offset).
_ID_OFFSET = {"train": 0, "val": 10_000_000}
_REQUIRED = ("train_images", "train_captions", "val_images", "val_captions", "vocab")
_FIX = "expected the EECS 498 coco.pt layout described in capgen/data/coco_pt.py; download the course file again"

_NULL, _START, _END = 0, 1, 2


class CocoPtSource:
    """One split of coco.pt: "train", "val", or "test" (= val; the course file has no test split).

    Images are the file's uint8 tensor, indexed on demand, never copied whole. Zip-format
    files (torch >= 1.6) are memory-mapped, so every process reading the file shares one copy
    in the page cache. Pickling (DataLoader workers under spawn/forkserver, deepcopy) drops
    the pixels and the copy maps the file again on first use; forked workers simply inherit
    the mapping.
    """

    # The file's own fields are its splits: no setting moves an image between them (see ImageFileSource).
    SPLIT_SETTINGS: tuple[str, ...] = ()

    def __init__(self, path: str, split: str):
        if split not in SPLIT_FIELDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_FIELDS)}, got {split!r}")
        self.path, self.split = os.path.expanduser(str(path)), split  # data.source.path=~/coco.pt
        if split == "test":  # said where the scores are made, so that they are not taken for held-out ones
            log.warning("coco.pt has no test split: its test split is its val split, the images that chose the best "
                        "checkpoint, so its test scores are val scores")
        self._field = SPLIT_FIELDS[split]
        data = _read(self.path)
        self.vocabulary = _vocabulary(self.path, data["vocab"])
        images, captions = _checked_split(self.path, data, self._field, len(self.vocabulary))
        self._images: torch.Tensor | None = images  # (N, 3, H, W) uint8, N = rows

        # Rows with identical pixels are one image, wherever they sit in the file. Hashing the
        # bytes keeps this one pass (~1 s over the course file's 400 MB of training images);
        # a 128-bit blake2b digest makes a collision between different images negligible.
        groups: dict[bytes, list[int]] = {}
        for r in range(images.shape[0]):
            digest = hashlib.blake2b(np.ascontiguousarray(images[r].numpy()), digest_size=16).digest()
            groups.setdefault(digest, []).append(r)
        self._rows = list(groups.values())  # per image, its rows in file order; images by first row
        rows = captions.tolist()
        self._captions = [[self.vocabulary.decode(rows[r]) for r in group] for group in self._rows]

    def __len__(self) -> int:
        return len(self._rows)

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3), a fresh array, so a caller writing into it never alters the file's data."""
        chw = self._pixels()[self._rows[i][0]]  # (3, H, W)
        return np.array(chw.permute(1, 2, 0).numpy(), order="C")

    def captions(self, i: int) -> list[str]:
        return list(self._captions[i])

    def image_id(self, i: int) -> int:
        return _ID_OFFSET[self._field] + self._rows[i][0]

    def image_files(self) -> list[str]:
        """The one file every image is read from: a cache records its state (capgen.data.cache)."""
        return [self.path]

    def _pixels(self) -> torch.Tensor:
        if self._images is None:  # an unpickled copy
            self._images = _read(self.path)[f"{self._field}_images"]
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}


def _read(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (looked at {p.resolve()}); download the EECS 498 course file "
            "coco.pt and put it there, or pass where it is, e.g. data.source.path=/abs/path/coco.pt"
        )
    stat = p.stat()
    return _load(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


# One load per process for all splits (train, val and test sources share it); the key holds the
# file's mtime and size so a rewritten file is read afresh.
@functools.lru_cache(maxsize=1)
def _load(path: str, mtime_ns: int, size: int) -> dict:
    # Pre-1.6 (non-zip) files cannot be memory-mapped and are read into memory instead.
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # torch reports a foreign or damaged file in many ways
        raise ValueError(f"{path}: torch.load cannot read it ({e!r}); {_FIX}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {type(data).__name__}, not a dict; {_FIX}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing} (has {sorted(map(str, data))}); {_FIX}")
    return data


def _vocabulary(path: str, vocab) -> Vocabulary:
    """The file's vocabulary under capgen's special-token names, ids unchanged."""
    itos = vocab.get("idx_to_token") if isinstance(vocab, dict) else None
    stoi = vocab.get("token_to_idx") if isinstance(vocab, dict) else None
    if not isinstance(itos, list) or not isinstance(stoi, dict) or not all(isinstance(t, str) for t in itos):
        raise ValueError(
            f"{path}: field 'vocab' must be a dict with a list 'idx_to_token' and a dict 'token_to_idx'; {_FIX}"
        )
    if tuple(itos[:4]) != FILE_SPECIALS:
        raise ValueError(f"{path}: field 'vocab' must start with {FILE_SPECIALS} (ids 0-3), got {itos[:4]}; {_FIX}")
    if len(set(itos)) != len(itos):
        raise ValueError(f"{path}: field 'vocab' repeats tokens in idx_to_token; {_FIX}")
    expected = {t: i for i, t in enumerate(itos)}
    differ = sorted(str(t) for t in stoi.keys() | expected.keys() if stoi.get(t) != expected.get(t))
    if differ:
        raise ValueError(f"{path}: field 'vocab' has token_to_idx disagreeing with idx_to_token for {differ[:5]}; {_FIX}")
    words = itos[len(FILE_SPECIALS):]
    if set(words) & set(SPECIALS):
        raise ValueError(f"{path}: field 'vocab' has capgen's special tokens {SPECIALS} among its words; {_FIX}")
    # Captions reach the model as text through tokenize(); a word it would change ("Dog",
    # "cannot") cannot come back to its own id, so its captions train on other ids.
    changed = [w for w in words if tokenize(w) != [w]]
    if changed:
        warnings.warn(
            f"{path}: field 'vocab' has words the tokenizer changes, so captions using them do not "
            f"encode back to the file's ids: {changed[:10]}{' ...' if len(changed) > 10 else ''}",
            stacklevel=3,
        )
    return Vocabulary([*SPECIALS, *words], max_len=MAX_WORDS)


def _checked_split(path: str, data: dict, field: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's (images (N, 3, H, W) uint8, captions (N, T) int64), or a ValueError saying what is wrong."""
    images, captions = data[f"{field}_images"], data[f"{field}_captions"]

    def bad(name: str, problem: str) -> ValueError:
        return ValueError(f"{path}: field {name!r} {problem}; {_FIX}")

    def describe(t) -> str:
        return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise bad(f"{field}_images", f"must be a uint8 tensor (N, 3, H, W), got {describe(images)}")
    if (
        not isinstance(captions, torch.Tensor) or captions.dtype != torch.int64
        or captions.dim() != 2 or captions.shape[1] < 2
    ):
        raise bad(f"{field}_captions", f"must be an int64 tensor (N, T) with T >= 2, got {describe(captions)}")
    if images.shape[0] != captions.shape[0] or images.shape[0] == 0:
        raise bad(f"{field}_captions", f"must have one row per row of {field}_images (and at least one), "
                  f"got {captions.shape[0]} captions for {images.shape[0]} images")
    out_of_range = (captions < 0) | (captions >= vocab_size)  # (N, T)
    if out_of_range.any():
        r = int(out_of_range.any(1).nonzero()[0])
        raise bad(f"{field}_captions", f"row {r} has ids outside the vocabulary's [0, {vocab_size}): {captions[r].tolist()}")

    # Every row must read <START>, up to MAX_WORDS words, <END>, then only <NULL>: exactly what
    # vocabulary.encode() rebuilds from the decoded caption.
    is_end = captions == _END
    end = is_end.int().argmax(1)  # (N,) column of the first <END>
    col = torch.arange(captions.shape[1])  # (T,)
    in_words = (col > 0) & (col < end[:, None])  # (N, T)
    after = col > end[:, None]  # (N, T)
    malformed = (
        (captions[:, 0] != _START)
        | ~is_end.any(1)
        | (end - 1 > MAX_WORDS)
        | (in_words & ((captions == _NULL) | (captions == _START))).any(1)
        | (after & (captions != _NULL)).any(1)
    )
    if malformed.any():
        r = int(malformed.nonzero()[0])
        layout = f"<START>, up to {MAX_WORDS} words, <END>, <NULL>..."
        raise bad(f"{field}_captions", f"row {r} is not {layout}: {captions[r].tolist()}")
    return images, captions
