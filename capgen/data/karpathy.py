"""Sources over COCO 2014 and Flickr8k/30k, read from their standard on-disk layouts.

Layouts, relative to `root`:
    COCO 2014   train2014/*.jpg, val2014/*.jpg,
                annotations/captions_train2014.json, annotations/captions_val2014.json
                (official: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}),
                dataset_coco.json (Karpathy's splits, optional)
    Flickr8k    Flicker8k_Dataset/*.jpg (sic: the archive's own spelling), dataset_flickr8k.json
    Flickr30k   flickr30k-images/*.jpg, dataset_flickr30k.json

Karpathy's split files ({"dataset", "images": [{"filepath" (COCO only), "filename", "split",
"sentences": [{"raw"}], "cocoid" (COCO only), "imgid"}]}) are the splits published results
use. Their "restval" images (COCO val2014 images outside val and test) are trained on, so
Karpathy COCO gives train 113,287, val 5,000, test 5,000 images.

Each source indexes its split once, in __init__: a JSON parse, a dict of captions per image
and one directory listing per image folder instead of a stat per file. A Karpathy file is
parsed once per process for all three splits (`karpathy_index` keeps the last one or two
files read, by path, size and modification time), with Python's garbage collector paused
while the millions of objects of a COCO-sized file are made (see image_files.gc_paused). Problems found then
(a missing image file, an empty caption, an image left without captions, an image id an
earlier entry already has) follow `on_bad_sample`; see images.BadSamples. A file that exists
but cannot be decoded is only found when it is read: `image(i)` then raises BadSampleError under either policy, since a
source cannot drop an item the sampler has already chosen, and a stand-in picture would
silently train on garbage. Scan every image ahead of training (capgen-prepare does) and pass
the ids it lists as bad in `exclude_ids`.

Image ids must be unique, since captions are grouped, predictions scored and bad images
listed by id: two images under one id would share captions, or one would go unscored. The
rule: unique within an official annotation file (each split reads only its own, and nothing
joins ids across splits), and across the whole Karpathy file, all splits together (one
cocoid in train and test is one COCO image both trained and tested on). Every split reads
the whole Karpathy file, so under "error" a repeated id anywhere in it stops the indexing
of any split: a run stops when it starts, not when it first reads its test split. Under
"skip" an entry is kept only if it is the first with its id in the file, so the splits stay
disjoint; each split counts what it drops.

Captions are kept whole and all of them (COCO has 5 to 7 per image): the vocabulary
truncates long captions when it encodes them, and scores use every reference.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .image_files import Entry, ImageFileSource, Record, gc_paused, repeat_of, split_records
from .images import BadSamples
from .text import check_image_id, read_utf8

log = logging.getLogger(__name__)

KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
_HOW_TO_GET = "see the 'Data sets' section of the README (for COCO: scripts/download_coco.sh)"
_HOW_TO_GET_FLICKR = "see the 'Data sets' section of the README"
# What capgen reads of a data set is Karpathy's split files; the official downloads' own text files are not read.
_KARPATHY_FILES = "Karpathy's dataset_coco.json, dataset_flickr8k.json or dataset_flickr30k.json (caption_datasets.zip)"


class Coco2014Source(ImageFileSource):
    """COCO 2014 captions, on Karpathy's splits when `karpathy_json` is given.

    karpathy_json: path to dataset_coco.json, absolute or relative to root. Without it the
    official splits are used: train = train2014, val = val2014 and test = val2014 too, since
    the official test2014 images have no public captions; test scores are then val scores.
    image_id is the COCO id, so results files match the official annotations.
    """

    how_to_get = _HOW_TO_GET

    def __init__(
        self,
        root: str,
        split: str,
        karpathy_json: str | None = None,
        image_size: int = 256,
        on_bad_sample: str = "error",
        exclude_ids: Iterable[int] | None = None,
    ):
        super().__init__(root, split, image_size, on_bad_sample, exclude_ids)
        bad = BadSamples(on_bad_sample, f"coco2014 {split}")
        if karpathy_json:
            path = os.path.join(self.root, os.path.expanduser(karpathy_json))
            index = karpathy_index(path, self.root, datasets=("coco",), id_key="cocoid")
            records = split_records(index.entries, KARPATHY_SPLITS[split], bad)
        else:
            records = self._official_records()
            if split == "test":  # said where the scores are made, so that they are not taken for held-out ones
                log.warning("data.source.karpathy_json=null: COCO's official splits, whose test split is val2014 (the "
                            "test2014 images have no public captions), the images that chose the best checkpoint: its "
                            "test scores are val scores. Karpathy's splits (dataset_coco.json) hold out a test split.")
        self._keep(records, bad)

    def _official_records(self) -> Iterator[Record]:
        part = "train" if self.split == "train" else "val"
        path = os.path.join(self.root, "annotations", f"captions_{part}2014.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"COCO 2014 caption annotations {path} not found: data.root={self.root} must hold "
                f"annotations/captions_train2014.json and captions_val2014.json{_coco2017_found(self.root)}. Unpack "
                f"annotations_trainval2014.zip into data.root, or point data.root at the folder that holds them "
                f"(scripts/download_coco.sh fetches them); these official splits are read because "
                f"data.source.karpathy_json=null"
            )
        data = _load_json(
            path, "COCO 2014 caption annotations", f"unpack annotations_trainval2014.zip into {self.root}; {_HOW_TO_GET}"
        )
        captions: dict[int, list] = {}  # image id -> its captions, in file order
        for k, a in enumerate(_field(data, "annotations", path, "the file")):
            captions.setdefault(_image_id(a, "image_id", path, f"annotation {k}"), []).append(
                _field(a, "caption", path, f"annotation {k}")
            )
        first: dict = {}  # image id and file -> the first entry with it, described for messages
        for k, entry in enumerate(_field(data, "images", path, "the file")):
            image_id = _image_id(entry, "id", path, f"image {k}")
            name = _field(entry, "file_name", path, f"image {k}")
            where = f"{path} (image id {image_id}, {name})"
            file = os.path.join(self.root, f"{part}2014", name)
            repeat = repeat_of(first, image_id, file, "image id", f"image {k} ({name})")
            yield image_id, file, captions.get(image_id, []), where, repeat

    def missing_folder(self, folder: str) -> str:
        return (f"image folder {folder} does not exist: COCO 2014's images unpack to train2014/ and val2014/ under "
                f"data.root={self.root}{_coco2017_found(self.root)}. Unpack train2014.zip and val2014.zip there, or "
                f"point data.root at the folder that holds them (scripts/download_coco.sh fetches them)")


def _folders(names: list[str], most: int = 8) -> str:
    """"the folders a, b", "the folder a" or "no folder", at most `most` named."""
    listed = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    return "no folder" if not names else f"the folder{'s' if len(names) > 1 else ''} {listed}"


def _coco2017_found(root: str) -> str:
    """A note when `root` holds COCO 2017 files, which capgen does not read: the likely cause
    of missing 2014 ones."""
    found = [name for name in ("train2017", "val2017", "annotations/captions_train2017.json",
                               "annotations/captions_val2017.json") if os.path.exists(os.path.join(root, name))]
    if not found:
        return ""
    return (f"; it holds COCO 2017's {', '.join(found)}, but capgen reads COCO 2014: Karpathy's splits, which "
            "published results use, are of the 2014 images under their 2014 names, and 2017 regroups them under "
            "other names")


class FlickrSource(ImageFileSource):
    """Flickr8k or Flickr30k on Karpathy's splits (the data sets have no other standard ones).

    karpathy_json: dataset_flickr8k.json or dataset_flickr30k.json, absolute or relative to
    root. image_dir: the image folder under root; by default the one its archive unpacks to,
    chosen from the file's "dataset" field. image_id is Karpathy's imgid.
    """

    how_to_get = _HOW_TO_GET_FLICKR

    IMAGE_DIRS = {"flickr8k": "Flicker8k_Dataset", "flickr30k": "flickr30k-images"}

    def __init__(
        self,
        root: str,
        split: str,
        karpathy_json: str = "dataset_flickr8k.json",
        image_dir: str | None = None,
        image_size: int = 256,
        on_bad_sample: str = "error",
        exclude_ids: Iterable[int] | None = None,
    ):
        super().__init__(root, split, image_size, on_bad_sample, exclude_ids)
        path = os.path.join(self.root, os.path.expanduser(karpathy_json))
        index = karpathy_index(path, self.root, datasets=tuple(self.IMAGE_DIRS), id_key="imgid", image_dir=image_dir,
                               image_dirs=tuple(self.IMAGE_DIRS.items()))
        self.dataset, self.image_dir = index.dataset, image_dir or self.IMAGE_DIRS[index.dataset]
        bad = BadSamples(on_bad_sample, f"{index.dataset} {split}")
        self._keep(split_records(index.entries, KARPATHY_SPLITS[split], bad), bad)

    def missing_folder(self, folder: str) -> str:
        # Mirrors and re-packs often rename the archive's folder (Flickr8k_Dataset for its
        # Flicker8k_Dataset): name the setting and the folders that are there.
        there = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        default = self.IMAGE_DIRS[self.dataset]
        example = there[0] if len(there) == 1 else "<folder>"
        return (f"image folder {folder} does not exist: data.source.image_dir={self.image_dir} names the folder of "
                f"{self.dataset}'s images under data.root={self.root}"
                f"{f' (its archive unpacks to {default})' if self.image_dir == default else ''}, and data.root holds "
                f"{_folders(there)}. Give data.source.image_dir=<the folder "
                f"holding the .jpg files>, e.g. data.source.image_dir={example}; {_HOW_TO_GET_FLICKR}")


class KarpathyIndex(NamedTuple):
    dataset: str  # the file's "dataset" field
    id_key: str  # the entries' field read as the image id
    entries: tuple[Entry, ...]  # every image of the file, in file order


def karpathy_index(
    path: str,
    root: str,
    datasets: tuple[str, ...] | None = None,
    id_key: str | None = None,
    image_dir: str | None = None,
    image_dirs: tuple[tuple[str, str], ...] = (),
    setting: str = "data.source.karpathy_json",
) -> KarpathyIndex:
    """Every image of a Karpathy split file, read once per process for all its splits.

    datasets: the "dataset" values this source reads (None: any). id_key: the entries' id
    field (None: "cocoid" when the first entry has one, else "imgid"). Image files are in
    root/image_dir when it is given, else in root/<the folder image_dirs names for the
    file's dataset>, else in root/<each entry's "filepath">, or root itself for entries
    without one (Flickr's and most hand-made files) when `datasets` is None.

    The file is parsed with the garbage collector paused and only what the splits need is
    kept; the last two files read stay in memory, keyed by path, size and modification
    time, so the three splits of a run (and capgen-prepare's second look) parse it once.
    setting: the config key that names the file, for messages."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Karpathy split file {path} not found; point {setting} at it; it is in Karpathy's "
                                f"caption_datasets.zip; {_HOW_TO_GET}")
    st = os.stat(path)
    return _karpathy_index(path, (st.st_size, st.st_mtime_ns, st.st_ino), root, datasets, id_key, image_dir, image_dirs,
                           setting)


@functools.lru_cache(maxsize=2)
def _karpathy_index(path, identity, root, datasets, id_key, image_dir, image_dirs, setting) -> KarpathyIndex:
    with gc_paused():
        # Flickr's own download ships Flickr8k.token.txt and Flickr_8k.trainImages.txt; given
        # here, they are not damaged JSON but another format, which capgen does not read.
        if datasets:
            other_format = (
                f"{setting} must name {' or '.join(f'dataset_{d}.json' for d in datasets)} from Karpathy's "
                "caption_datasets.zip; the text files of the official downloads (Flickr8k.token.txt, "
                "Flickr_8k.trainImages.txt, results_20130124.token) are not read. For captions or splits of your "
                "own, write a JSONL or CSV captions file and use data=custom (see the README's 'Your own data')"
            )
        else:
            other_format = (f"{setting} ending in .json is read as a Karpathy-format split file, in the format of "
                            f"{_KARPATHY_FILES}; write rows of file and caption as a .jsonl or .csv file instead")
        data = _load_json(path, "Karpathy split file", f"it is in Karpathy's caption_datasets.zip; {_HOW_TO_GET}",
                          object_hook=_without_tokens, other_format=other_format)
        dataset = _field(data, "dataset", path, "the file")
        if datasets is not None and dataset not in datasets:
            raise ValueError(
                f"{path} holds Karpathy's splits for {dataset!r}, but this source reads {' or '.join(datasets)}; "
                f"point karpathy_json at dataset_{datasets[0]}.json"
            )
        images = _field(data, "images", path, "the file")
        if not isinstance(images, list):
            raise ValueError(f"{path}: 'images' is not a list of image entries; is this a Karpathy split file?")
        if id_key is None:
            id_key = "cocoid" if images and isinstance(images[0], dict) and "cocoid" in images[0] else "imgid"
        named = image_dir or dict(image_dirs).get(dataset)
        folder = os.path.join(root, named) if named else None
        entries, first = [], {}  # first: id and file -> the first entry with it, described for messages
        for k, entry in enumerate(images):
            where = f"image {k}"
            part = _field(entry, "split", path, where)
            if part not in ("train", "restval", "val", "test"):
                raise ValueError(f"{path}: {where} has split {part!r}; Karpathy's splits are train, restval, val, test")
            image_id = _image_id(entry, id_key, path, where)
            name = _field(entry, "filename", path, where)
            if folder is None and datasets is None and "filepath" not in entry:
                file = os.path.join(root, name)
            else:
                file = os.path.join(folder or os.path.join(root, _field(entry, "filepath", path, where)), name)
            described = f"{path} ({where}, split {part}, {id_key} {image_id}, {name})"
            repeat = repeat_of(first, image_id, file, id_key, f"{where} (split {part}, {name})")
            entries.append((part, image_id, file, described, repeat, _raw_captions(entry, path, where)))
        return KarpathyIndex(dataset, id_key, tuple(entries))


def _without_tokens(d: dict) -> dict:
    """A parsed JSON object without its "tokens": Karpathy's files hold each caption twice, raw
    and tokenized, and only the raw one is read. Dropped as the parser makes each sentence,
    the token lists (6.8M strings for COCO) never pile up: half the peak memory, and faster."""
    d.pop("tokens", None)
    return d


def _raw_captions(entry, path: str, where: str) -> tuple | str:
    """The entry's raw captions, or the message of what is wrong with them (raised by the split
    that wants the image only, as when each split read the file itself)."""
    try:
        return tuple(_field(s, "raw", path, f"{where} sentence {j}") for j, s in enumerate(_field(entry, "sentences", path, where)))
    except ValueError as e:
        return str(e)


def _load_json(path: str, what: str, how: str, object_hook=None, other_format: str | None = None) -> dict:
    """The parsed file. One that does not parse is damaged (cut short, say) when it starts as a
    JSON object or list does, or is empty; otherwise it is another format, and `other_format`
    (or `how`) says what the file must be instead."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found; {how}")
    text = read_utf8(path, what)
    try:
        return json.loads(text, object_hook=object_hook)
    except json.JSONDecodeError as e:
        start = text.lstrip()
        if not start or start[0] in "{[":
            raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged (cut short?), download it again") from e
        first = start.splitlines()[0]
        first = first if len(first) <= 60 else first[:57] + "..."
        raise ValueError(f"{path} is not a JSON file (its first line is {first!r}), so not the {what} capgen reads; "
                         f"{other_format or how}") from None


def _image_id(entry, key: str, path: str, where: str) -> int:
    """entry[key] as an int: ids are compared (captions grouped, duplicates found) as ints."""
    value = _field(entry, key, path, where)
    try:
        image_id = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {where} has {key} {value!r}, which is not an integer image id; fix that entry") from None
    return check_image_id(image_id, f"{path}: {where}", "give that entry a smaller id")


def _field(entry, key: str, path: str, where: str):
    try:
        return entry[key]
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"{path}: {where} has no {key!r} field; is this the right file for this source?") from None
