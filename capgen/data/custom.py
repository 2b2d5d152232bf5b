"""Your own images and captions (data=custom): a folder of images and a captions file.

The captions file (`captions`, relative to root or absolute) is one of:

    *.jsonl   one JSON object per caption:
              {"file": "dogs/rex.jpg", "caption": "A dog on a sofa.", "split": "train", "image_id": 17}
    *.csv     the same as columns under a header row: file,caption[,split][,image_id]
    *.json    a Karpathy-format split file ({"images": [{"filename", "split", "sentences":
              [{"raw"}], "cocoid" or "imgid", "filepath" (optional)}]}), whatever its
              "dataset" field says: read by the code that reads Karpathy's COCO and Flickr
              files (capgen.data.karpathy), restval trained on as there.

Rows (JSONL, CSV): one per caption, so an image with five captions has five rows; `file` is
relative to the image folder (root/image_dir, or root itself), sub-folders allowed; other
columns are ignored. `split` (train, val or test) is optional: when no row has one, the
splits are drawn by `split_fractions` (below); when rows have one, every row must, and
split_fractions must be left unset. `image_id` (an integer) is optional as well: when no
row has one, an image's id is its file's position among all the file names sorted
(0, 1, ...): the same on every machine for the same files, but adding or removing a file
renumbers the files after it, so results files of two versions of a data set do not
compare by id. Give ids in the file to keep them fixed.

Splits drawn by fractions, e.g. split_fractions={train: 0.8, val: 0.1, test: 0.1}: every
image's file name is hashed with `split_seed` (BLAKE2b), the images are ordered by that
hash, and the first round(n * val) go to val, the next round(n * test) to test, the rest to
train. So the draw is the same on every machine and Python version, does not depend on the
order of the rows, gives each image one split, and a new seed gives a new draw.

Problems in an image or caption (a missing file, an empty caption, an image without
captions, an id or a file that an earlier image already has) follow `on_bad_sample`, as
for COCO (see capgen.data.karpathy and images.BadSamples); a file that cannot be read as
a captions file at all (a row without `file`, a CSV row with more cells than its header
has columns, as an unquoted comma in a caption makes, a split that is not train/val/test,
one image given two splits or two ids) stops with a ValueError naming the file and the line.
"""

from __future__ import annotations

import collections
import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping

from .image_files import SPLITS, Entry, ImageFileSource, gc_paused, repeat_of, split_records
from .images import BadSamples
from .karpathy import KARPATHY_SPLITS, karpathy_index
from .text import check_image_id, read_utf8

FORMATS = (".jsonl", ".csv", ".json")
_HOW_TO_GET = "see the README's 'Your own data' (data=custom)"
# Quoted as a shell needs it: bare, bash expands the braces into three arguments.
_FRACTIONS_EXAMPLE = "data.source.split_fractions='{train:0.8,val:0.1,test:0.1}'"
log = logging.getLogger(__name__)


class CustomSource(ImageFileSource):
    """One split of your own data set (see the module docstring for the files).

    root: the data set's folder (data.root). captions: the captions file, relative to root
    or absolute; its extension says its format. image_dir: the image folder, relative to
    root (None: root itself, or for a Karpathy-format file the entries' "filepath" folders).
    split_fractions: {train, val, test} fractions to draw the splits by, for rows without a
    split column. image_id is the file's or the sorted-position id described above.
    """

    how_to_get = _HOW_TO_GET
    # What draws the splits of a captions file without a split column (ImageFileSource.SPLIT_SETTINGS).
    SPLIT_SETTINGS = ("split_fractions", "split_seed")

    def __init__(
        self,
        root: str,
        split: str,
        captions: str = "captions.jsonl",
        image_dir: str | None = None,
        split_fractions: dict[str, float] | None = None,
        split_seed: int = 0,
        image_size: int = 256,
        on_bad_sample: str = "error",
        exclude_ids: Iterable[int] | None = None,
    ):
        super().__init__(root, split, image_size, on_bad_sample, exclude_ids)
        self.image_dir = image_dir
        path = os.path.join(self.root, os.path.expanduser(captions))
        extension = os.path.splitext(path)[1].lower()
        if extension not in FORMATS:
            raise ValueError(
                f"data.source.captions={captions}: a captions file must end in .jsonl, .csv or .json (a Karpathy-format "
                f"split file), not {extension or 'nothing'!r}; {_HOW_TO_GET}"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"captions file {path} not found; point data.source.captions at it ({_HOW_TO_GET})")
        fractions = _check_fractions(split_fractions)
        bad = BadSamples(on_bad_sample, f"custom {split}")
        if extension == ".json":
            if fractions is not None:
                raise ValueError(
                    f"data.source.split_fractions={dict(split_fractions)}: {path} is a Karpathy-format file, which gives "
                    "every image its split; leave data.source.split_fractions unset (null)"
                )
            index = karpathy_index(path, self.root, image_dir=image_dir, setting="data.source.captions")
            records = split_records(index.entries, KARPATHY_SPLITS[split], bad)
        else:
            st = os.stat(path)
            folder = os.path.join(self.root, image_dir) if image_dir else self.root
            entries = _row_index(path, (st.st_size, st.st_mtime_ns, st.st_ino), folder, fractions, split_seed)
            records = split_records(entries, (split,), bad)
        self._keep(records, bad)


    def missing_folder(self, folder: str) -> str:
        setting = (f"data.source.image_dir={self.image_dir} names it under data.root ({self.root})" if self.image_dir
                   else f"the captions file's names are read from data.root ({self.root}) itself")
        return (f"image folder {folder} does not exist: {setting}; point data.source.image_dir at the folder that "
                f"holds the images, relative to data.root ({_HOW_TO_GET})")


def _check_fractions(fractions: Mapping[str, float] | None) -> tuple[tuple[str, float], ...] | None:
    """split_fractions as sorted (split, fraction) pairs, or None; a ValueError naming the setting otherwise."""
    if fractions is None:
        return None
    given = dict(fractions)
    problem = None
    if not given or set(given) - set(SPLITS):
        problem = f"its keys must be among {', '.join(SPLITS)}"
    elif any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in given.values()):
        problem = "each fraction must be a number from 0 to 1"
    elif not math.isclose(sum(given.values()), 1.0, abs_tol=1e-6):
        problem = f"the fractions must add up to 1, they add up to {sum(given.values()):g}"
    elif given.get("train", 0) == 0:
        problem = "train needs a fraction above 0"
    if problem:
        raise ValueError(f"data.source.split_fractions={given}: {problem}, e.g. {_FRACTIONS_EXAMPLE}")
    return tuple(sorted((k, float(v)) for k, v in given.items()))


@functools.lru_cache(maxsize=2)
def _row_index(path: str, identity: tuple, folder: str, fractions, seed: int) -> tuple[Entry, ...]:
    """Every image of a JSONL/CSV captions file with its split, read once for all splits (by
    path, size and modification time, as karpathy.karpathy_index)."""
    with gc_paused():
        rows = _read_rows(path)
        if not rows:
            raise ValueError(f"{path} has no caption rows{' under its header' if path.lower().endswith('.csv') else ''}, "
                             "so every split would be empty; add one row per caption, e.g. "
                             + ("a.jpg,A dog on a sofa.,train" if path.lower().endswith(".csv")
                                else '{"file": "a.jpg", "caption": "A dog on a sofa.", "split": "train"}'))
        images = _group_rows(path, rows)
        has_split = [image["split"] is not None for image in images.values()]
        if any(has_split) and fractions is not None:
            raise ValueError(
                f"{path} gives each image its split (the split column), and data.source.split_fractions is set too: "
                "remove one of them (leave data.source.split_fractions unset to keep the file's splits)"
            )
        if any(has_split) and not all(has_split):
            line = next(image["line"] for image in images.values() if image["split"] is None)
            raise ValueError(f"{path}: line {line} has no split, but other rows have one; give every row its image's "
                             f"split (train, val or test), or none and draw them with {_FRACTIONS_EXAMPLE}")
        if not any(has_split):
            if fractions is None:
                raise ValueError(
                    f"{path} has no split column: give each row a split (train, val or test), or draw the splits "
                    f"by fractions with {_FRACTIONS_EXAMPLE}"
                )
            drawn = draw_splits(list(images), dict(fractions), seed)
            for file, part in drawn.items():
                images[file]["split"] = part
            sizes = collections.Counter(drawn.values())
            log.info("%s: splits drawn by data.source.split_fractions=%s (split_seed=%d): %s images", path,
                     dict(fractions), seed, ", ".join(f"{part} {sizes[part]}" for part in SPLITS))
        has_id = [image["image_id"] is not None for image in images.values()]
        if any(has_id) and not all(has_id):
            line = next(image["line"] for image in images.values() if image["image_id"] is None)
            raise ValueError(f"{path}: line {line} has no image_id, but other rows have one; give every row its image's "
                             "id, or none (ids are then positions in the sorted file names)")
        if not any(has_id):
            for k, file in enumerate(sorted(images)):
                images[file]["image_id"] = k
        entries, first = [], {}  # first: id and file -> the first image with it, described for messages
        for file, image in images.items():
            where = f"{path} ({_lines(image['lines'])}, image_id {image['image_id']}, {file})"
            repeat = repeat_of(first, image["image_id"], os.path.join(folder, file), "image_id",
                               f"line {image['line']} ({file})")
            entries.append((image["split"], image["image_id"], os.path.join(folder, file), where, repeat,
                            tuple(image["captions"])))
        return tuple(entries)


def draw_splits(files: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """file -> split: files ordered by a seeded hash of their names, cut at the fractions
    (val first, then test, train the rest; counts rounded half up)."""
    def key(file: str) -> bytes:
        return hashlib.blake2b(f"{seed}\0{file}".encode(), digest_size=8).digest()

    ordered = sorted(files, key=lambda f: (key(f), f))
    n = len(ordered)
    counts = {part: math.floor(n * fractions.get(part, 0.0) + 0.5) for part in ("val", "test")}
    counts["val"] = min(counts["val"], n)
    counts["test"] = min(counts["test"], n - counts["val"])
    out, start = {}, 0
    for part in ("val", "test"):
        out.update(dict.fromkeys(ordered[start : start + counts[part]], part))
        start += counts[part]
    out.update(dict.fromkeys(ordered[start:], "train"))
    return out


def _read_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) of every caption row of a JSONL or CSV file."""
    rows = []
    # A spreadsheet's UTF-8 byte-order mark is removed; UTF-16 and stray marks are named (read_utf8).
    with io.StringIO(read_utf8(path, "captions file"), newline="") as f:
        if path.lower().endswith(".csv"):
            return _read_csv(path, f)
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not valid JSON ({e}); each line must be one object such as "
                                 '{"file": "a.jpg", "caption": "A dog."}') from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {number} is {type(row).__name__}, not an object such as "
                                 '{"file": "a.jpg", "caption": "A dog."}')
            rows.append((number, row))
    return rows


def _read_csv(path: str, f: io.StringIO) -> list[tuple[int, dict]]:
    """(line number, row) of every row of a captions CSV, each checked against the header.

    A row must have a cell per column: an unquoted comma in a caption (a.jpg,a dog, on a sofa)
    makes one cell more, and csv would put the rest of the caption in a cell with no column,
    cutting the caption without a word; so a row with more cells than the header is refused,
    whatever the columns (with a split column the tail would otherwise be read as the split).
    Fewer cells are accepted only when the missing ones are optional columns (a hand-written
    a.jpg,A dog. under file,caption,image_id): they are empty cells, as in a spreadsheet's
    a.jpg,A dog.,; a row that leaves file or caption without a cell is refused."""
    reader = csv.reader(f)
    columns = [c.strip() for c in next(reader, [])]
    missing = [c for c in ("file", "caption") if c not in columns]
    if missing:
        # A spreadsheet in a European locale saves "CSV" with semicolons; a tab-separated export
        # is one column too: the whole header is then a single cell holding the separator.
        separator = next((name for sep, name in ((";", "semicolons"), ("\t", "tabs")) if any(sep in c for c in columns)), None)
        hint = (f"; its cells are separated by {separator}, but a captions CSV separates them by commas: save it as "
                "CSV with commas (in a spreadsheet: CSV UTF-8, field delimiter ,), or write a .jsonl") if separator else ""
        raise ValueError(f"{path}: the header row has no {' or '.join(missing)} column (it has {columns}){hint}; a "
                         "captions CSV starts with a header such as file,caption,split,image_id")
    needed = max(columns.index("file"), columns.index("caption")) + 1  # cells a row must reach
    header = ",".join(columns)
    rows = []
    for cells in reader:
        if not cells:
            continue  # a blank line
        where = (f"{path}: line {reader.line_num} has {len(cells)} cell{'s' if len(cells) != 1 else ''} for "
                 f"{len(columns)} columns ({header})")
        if len(cells) > len(columns):
            raise ValueError(f"{where}: quote a caption that contains commas, \"a, b\" (unquoted, its commas "
                             f"separate cells and cut the caption at the first); {_quoted_example(cells, columns)}. "
                             "A spreadsheet's CSV export quotes such cells itself.")
        if len(cells) < needed:
            lost = [c for c in ("file", "caption") if columns.index(c) >= len(cells)]
            raise ValueError(f"{where}, so it has no {' or '.join(lost)}; give every row its file and caption, one "
                             "row per line (a caption that holds a line break or a comma must be quoted, \"a, b\"), "
                             "and leave optional cells empty, e.g. a.jpg,A dog.,,")
        # An empty (or left out) cell is a missing value: split and image_id are then drawn/assigned.
        row = {k: v for k, v in zip(columns, cells) if v != "" or k == "caption"}
        rows.append((reader.line_num, row))
    return rows


def _quoted_example(cells: list[str], columns: list[str]) -> str:
    """The row as it reads if its extra cells are the caption's, quoted as it should be written;
    or, when they are empty (trailing commas), what to remove."""
    extra = len(cells) - len(columns)
    if not any(c.strip() for c in cells[len(columns):]):
        return f"if its last {extra} cell{'s are' if extra != 1 else ' is'} only trailing commas, remove them"
    at = columns.index("caption")
    fixed = cells[:at] + [",".join(cells[at:at + extra + 1])] + cells[at + extra + 1:]
    if "split" in columns and fixed[columns.index("split")].strip() not in SPLITS:
        # Read so, the split would be no split: the extra cell is not the caption's (e.g. one past the split).
        return f"give the row one cell per column of the header ({','.join(columns)})"
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fixed)
    return f"if the commas are the caption's, the line reads: {out.getvalue()}"


def _group_rows(path: str, rows: list[tuple[int, dict]]) -> dict[str, dict]:
    """file -> {line (its first), lines (one per caption), captions, split, image_id}, files in
    order of first appearance."""
    images: dict[str, dict] = {}
    for number, row in rows:
        where = f"{path}: line {number}"
        file = row.get("file")
        if not isinstance(file, str) or not file.strip():
            raise ValueError(f"{where} has no file name (the 'file' field, relative to the image folder); give every "
                             "row the image file its caption describes")
        if "caption" not in row:
            raise ValueError(f"{where} has no 'caption' field; give every row one caption")
        file = os.path.normpath(file.strip())
        part, image_id = row.get("split"), _image_id(row.get("image_id"), where)
        if isinstance(part, str):
            # "train " as a spreadsheet cell keeps it: stripped, as file names are.
            part = part.strip() or None
        if part is not None and part not in SPLITS:
            raise ValueError(f"{where} has split {part!r}; a split is train, val or test")
        image = images.setdefault(file, {"line": number, "lines": [], "captions": [], "split": part, "image_id": image_id})
        for key, value, what in (("split", part, "split"), ("image_id", image_id, "id")):
            if image[key] != value:
                raise ValueError(
                    f"{where} gives {file} {_given(key, value)}, but line {image['line']} gave it "
                    f"{_given(key, image[key])}; an image has one {what}, so all its rows must give the same one"
                )
        image["captions"].append(row["caption"])
        image["lines"].append(number)
    return images


def _lines(numbers: list[int]) -> str:
    """Where an image's captions are, for messages about its k-th caption: "line 5", or
    "lines 5, 25" when its captions are on several (caption k is on the k-th of them)."""
    return f"line {numbers[0]}" if len(numbers) == 1 else "lines " + ", ".join(map(str, numbers))


def _given(key: str, value) -> str:
    return f"no {key}" if value is None else f"the {key} {value!r}"


def _image_id(value, where: str) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        image_id = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} has image_id {value!r}, which is not an integer; give whole-number ids, or none "
                         "(ids are then positions in the sorted file names)") from None
    return check_image_id(image_id, where, "give smaller ids, or none (ids are then positions in the sorted file names)")
