#!/usr/bin/env python
"""What the checks of a capgen-prepare cache cost when it is opened, at COCO scale (123,287
images of 256x256x3, as all of COCO 2014): writes a synthetic split into FOLDER (24.2 GB of
real blocks and its index; delete it after), then times three opens (docs/performance.md).
With --data, only the check that the data has not changed since (capgen.data.cache's module
docstring): 123,287 empty image files in COCO's two folders and the captions of the split,
compared five times with what an index records of them.

    python scripts/cache_check_cost.py /scratch/cache_cost
    python scripts/cache_check_cost.py --data /scratch/cache_cost
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from capgen.data import cache

N, SHAPE = 123_287, (123_287, 256, 256, 3)


def _captions() -> list[list[str]]:
    """Five 10-word captions per image, as COCO has."""
    rng = np.random.default_rng(0)
    words = "a man woman dog cat riding sitting on top of the with table red blue street near two".split()
    return [[" ".join(rng.choice(words, 10)) + "." for _ in range(5)] for _ in range(N)]


class _Source:
    """The raw source's interface over the synthetic split: ids, captions and image files."""

    def __init__(self, captions: list[list[str]], files: list[str]):
        self._captions, self._files = captions, files

    def __len__(self) -> int:
        return N

    def image_id(self, i: int) -> int:
        return i

    def captions(self, i: int) -> list[str]:
        return self._captions[i]

    def image_files(self) -> list[str]:
        return self._files


class _CaptionsOnly(_Source):
    """The same without image files: the check of ids and captions alone."""

    image_files = None


def data_check(folder: Path) -> None:
    """Times the data check of an opening (cache._check_data: the ids and captions compared, a
    stat per image file) and its parts, and vocab.json's digest of the captions."""
    files = []
    for part, count in (("train2014", 82_783), ("val2014", N - 82_783)):  # COCO 2014's two folders
        (folder / part).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            path = folder / part / f"COCO_{part}_{k:012d}.jpg"
            if not path.exists():
                path.touch()
            files.append(str(path))
    source = _Source(_captions(), files)
    index = json.loads(json.dumps({"image_ids": list(range(N)), "captions": source._captions, "bad": [],
                                   "image_files": cache.files_record(files)}))
    record = len(json.dumps(index["image_files"])) / 1e6
    captions_only = _CaptionsOnly(source._captions, files)
    without = {k: v for k, v in index.items() if k != "image_files"}
    timings = {name: [] for name in ("the whole check", "a stat per file", "ids and captions", "vocab.json's digest",
                                     "the index's checksum with the record", "the index's checksum without it")}
    for _ in range(5):
        timings["the whole check"].append(seconds(lambda: cache._check_data(folder / "index", index, source)))
        timings["a stat per file"].append(seconds(lambda: cache.files_record(files)))
        timings["ids and captions"].append(seconds(lambda: cache._check_data(folder / "index", index, captions_only)))
        timings["vocab.json's digest"].append(seconds(lambda: cache.captions_digest(source)))
        timings["the index's checksum with the record"].append(seconds(lambda: cache._content_checksum(index)))
        timings["the index's checksum without it"].append(seconds(lambda: cache._content_checksum(without)))
    print(f"{N} image files, their record {record:.1f} MB of the index")
    for name, values in timings.items():
        print(f"{name}: median {statistics.median(values):.3f} s ({', '.join(f'{v:.3f}' for v in values)})")


def write_split(folder: Path) -> dict:
    data, size = cache.data_path(folder, "images", "train"), int(np.prod(SHAPE))
    if not data.exists() or data.stat().st_size != size:
        with open(data, "wb") as f:  # real blocks on disk, not a sparse file; another byte every MiB
            block = 1 << 20
            for k in range(size // block):
                f.write(bytes([k % 251]) * block)
            f.write(b"\1" * (size % block))
    captions = _captions()
    description = {"source": "synthetic", "split": "train", "size": N}
    index = cache._signed({"version": cache.FORMAT_VERSION, "complete": True, "shape": list(SHAPE), "bad": [],
                           "data_checksum": cache.data_checksum(data), "format": "capgen image cache",
                           "split": "train", "source": description, "dtype": "uint8", "image_ids": list(range(N)),
                           "captions": captions})
    cache._write_json(cache.index_path(folder, "images", "train"), index)
    return description


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    description = write_split(folder)
    data, index = cache.data_path(folder, "images", "train"), cache.index_path(folder, "images", "train")
    print(f"index {index.stat().st_size / 1e6:.1f} MB, data {data.stat().st_size / 1e9:.1f} GB")
    for run in range(3):
        fd = os.open(data, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the data file's pages out of the page cache
        os.close(fd)
        cold = seconds(lambda: cache.data_checksum(data))
        warm = seconds(lambda: cache.data_checksum(data))
        content = seconds(lambda: cache._content_checksum(json.loads(index.read_text())))
        opened = seconds(lambda: cache.CachedImages(folder, "train", description))
        alone = seconds(lambda: json.loads(index.read_text()))
        print(f"run {run}: open {opened:.3f} s (the index alone {alone:.3f} s); data sample cold {cold * 1e3:.1f} ms, "
              f"warm {warm * 1e3:.1f} ms; index content checksum with its parse {content:.3f} s")


if __name__ == "__main__":
    if sys.argv[1] == "--data":
        data_check(Path(sys.argv[2]))
    else:
        main(Path(sys.argv[1]))
