"""The base of every source that reads image files and their captions from disk (COCO and Flickr,
capgen.data.karpathy; your own, capgen.data.custom), and what they share: the split names, one
image's entry of an index file, the records of a split, repeated ids and files, and reading a
large index with the garbage collector paused. See capgen.data.karpathy's docstring for the
rules on bad samples and unique image ids that every file source keeps.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..tokenizer import has_tokens
from .images import FIX_GONE, FIX_UNREADABLE, BadSampleError, BadSamples, FileGone, check_on_bad_sample, load_rgb

SPLITS = ("train", "val", "test")
_FIX_ENTRY = "fix that entry in the annotation file, or set data.on_bad_sample=skip"
_FIX_MISSING = "put the image file back (see the README's 'Data sets'), or set data.on_bad_sample=skip"
_FIX_DUPLICATE = (
    "give each image its own id and its own file in the annotation file, or delete the repeated entry, or set "
    "data.on_bad_sample=skip to keep only the first entry with each id and file"
)

# (image id, image file, raw captions, where the entry was read: for messages, and why its
# id repeats an earlier entry's: for messages; None when it is the first with that id)
Record = tuple[int, str, list, str, "tuple[str, str] | None"]  # id, file, captions, where, (kind, why) of a repeat
# One image of an index file, whatever split it is in: (its split as the file names it, image
# id, image file, where (for messages), (kind, why) of a repeat or None, its raw captions, or
# the message of the error reading them: raised only by the split that wants the image).
Entry = tuple[str, int, str, str, "tuple[str, str] | None", "tuple | str"]


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector paused for the block. Reading a COCO-sized index
    (a 150-200 MB JSON file, millions of strings, lists and dicts) triggers a collection
    every 700 new objects, and each older-generation one walks everything made so far: it
    took 13 s of a 16 s parse of a synthetic Karpathy COCO file (scripts/benchmark.py
    --sections startup). What is made here holds no reference cycles, so nothing is lost."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ImageFileSource:
    """One split of images on disk, each with its reference captions.

    Subclasses find their files and captions and hand `_keep` one record per image of the
    split; what is kept is stored as three parallel lists, which pickle cheaply to workers.
    `how_to_get` ends the messages about a missing folder: where the user gets the data.
    """

    how_to_get: str  # each source's own: where the user gets its data
    # The constructor arguments that decide which image is in which split, recorded in every
    # checkpoint (capgen.runs.provenance) so that an evaluation cannot move a training image
    # into the split it scores. None here: Karpathy's file, or the official one, gives each its split.
    SPLIT_SETTINGS: tuple[str, ...] = ()

    def __init__(self, root: str, split: str, image_size: int, on_bad_sample: str, exclude_ids: Iterable[int] | None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        check_on_bad_sample(on_bad_sample)
        self.root = os.path.expanduser(str(root))
        if not os.path.isdir(self.root):
            raise FileNotFoundError(
                f"data root {self.root} does not exist; {self.how_to_get}, then point data.root at that folder"
            )
        self.split, self.image_size, self.on_bad_sample = split, image_size, on_bad_sample
        self.exclude_ids = {int(i) for i in exclude_ids or ()}
        self._ids: list[int] = []
        self._paths: list[str] = []
        self._captions: list[tuple[str, ...]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def image(self, i: int) -> np.ndarray:
        """uint8 (image_size, image_size, 3); BadSampleError if the file cannot be decoded, FileGone
        if it is no longer there (every file existed when the split was read)."""
        path = self._paths[i]
        try:
            return load_rgb(path, self.image_size, FIX_UNREADABLE)
        except BadSampleError:
            if os.path.lexists(path):  # there, but unreadable (a link to nothing included)
                raise
        raise FileGone(path, f"missing now, though it was there when the {self.split} split was read (moved, deleted or "
                       "its drive unmounted since)", FIX_GONE)

    def captions(self, i: int) -> list[str]:
        return list(self._captions[i])

    def image_id(self, i: int) -> int:
        return self._ids[i]

    def missing_folder(self, folder: str) -> str:
        """The message for an image folder that does not exist; a source says which setting names it."""
        return f"image folder {folder} does not exist; {self.how_to_get}"

    def image_files(self) -> list[str]:
        """The image file of each item, in order: a cache records their state (capgen.data.cache)."""
        return list(self._paths)

    def _keep(self, records: Iterable[Record], bad: BadSamples) -> None:
        with gc_paused():  # a COCO train split keeps 113k images and 570k captions
            self._keep_records(records, bad)

    def _keep_records(self, records: Iterable[Record], bad: BadSamples) -> None:
        listings: dict[str, set[str]] = {}  # image folder -> names in it, listed once
        total = 0
        for image_id, path, raw, where, repeat in records:
            total += 1
            if repeat is not None:
                kind, reason = repeat
                bad.report(kind, where, reason, _FIX_DUPLICATE)
                continue
            if image_id in self.exclude_ids:
                bad.exclude()
                continue
            captions = []
            for k, c in enumerate(raw, start=1):  # counted from 1, as the lines of a file are
                which = f"caption {k} of {len(raw)}"
                text = c.strip() if isinstance(c, str) else ""
                if text and has_tokens(text):
                    captions.append(text)
                elif text:  # emoji or punctuation only: tokenized, as training and scoring do, it is empty
                    bad.report("empty caption", where, f"{which} ({c!r}) has no words once tokenized (only "
                               "punctuation, emoji or symbols, which the COCO tokenizer drops), so it would train and "
                               "score as an empty caption", _FIX_ENTRY)
                elif c is None:
                    bad.report("empty caption", where, f"{which} is missing (no caption value)", _FIX_ENTRY)
                elif not isinstance(c, str):
                    bad.report("empty caption", where, f"{which} is not text but a {type(c).__name__} ({c!r})",
                               _FIX_ENTRY)
                else:
                    bad.report("empty caption", where, f"{which} is empty ({c!r})", _FIX_ENTRY)
            if not captions:
                bad.report("image without captions", where, "has no caption with words", _FIX_ENTRY)
                continue
            if not _listed(path, listings, self.missing_folder):
                bad.report("missing file", path, *_why_missing(path, where))
                continue
            self._ids.append(image_id)
            self._paths.append(path)
            self._captions.append(tuple(captions))
        bad.summary(len(self._ids), total)


def _why_missing(path: str, where: str) -> tuple[str, str]:
    """(reason, fix) for an image file that does not exist. A Windows path (photos\\rex.jpg,
    as a spreadsheet made on Windows holds) names one file called that here, not a file in a
    folder: the real fix is the separator, not putting a file back."""
    name = os.path.basename(path)
    if "\\" not in name:
        return f"image file of {where} does not exist", _FIX_MISSING
    slashed = name.replace("\\", "/")
    return (f"image file of {where} does not exist: its name holds '\\', which is not a folder separator here "
            f"(only '/' is)", f"write that entry's file as {slashed}, or set data.on_bad_sample=skip")


def split_records(entries: Iterable[Entry], wanted: Sequence[str], bad: BadSamples) -> Iterator[Record]:
    """Records of the entries whose split is one of `wanted`. Ids and files are unique across
    the whole file (see the module docstring): a repeat outside `wanted` goes to
    `bad.elsewhere`, which stops under "error" and leaves it to its own split under "skip"."""
    for part, image_id, file, described, repeat, raw in entries:
        if part not in wanted:
            if repeat is not None:
                bad.elsewhere(described, repeat[1], _FIX_DUPLICATE)
            continue
        if isinstance(raw, str):
            raise ValueError(raw)
        yield image_id, file, list(raw), described, repeat


def repeat_of(first: dict, image_id: int, file: str, id_name: str, entry: str) -> tuple[str, str] | None:
    """(kind, why) when this entry's id, or else its image file, is an earlier entry's, for
    messages; None (and `first` remembers `entry`, its description, under both) when neither
    is. One file under two ids would be trained on, or scored, as two images."""
    if image_id in first:
        why = f"its {id_name} {image_id} is also that of {first[image_id]}, an earlier entry of the same file"
        return "duplicate image id", why + "; one id must name one image"
    if file in first:
        why = f"its image file {file} is also that of {first[file]}, an earlier entry of the same file"
        return "duplicate image file", why + "; one file must be one image"
    first[image_id] = first[file] = entry
    return None


def _listed(path: str, listings: dict[str, set[str]], missing_folder: Callable[[str], str]) -> bool:
    """Whether `path` exists, from one listing of its folder (much cheaper than a stat per file)."""
    folder, name = os.path.split(path)
    if folder not in listings:
        if not os.path.isdir(folder):
            raise FileNotFoundError(missing_folder(folder))
        listings[folder] = set(os.listdir(folder))
    return name in listings[folder]
