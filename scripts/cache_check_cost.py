#!/usr/bin/env python
"""What the checks of a capgen-prepare cache cost when it is opened, at COCO scale (123,287
images of 256x256x3, as all of COCO 2014): writes a synthetic split into FOLDER (24.2 GB of
real blocks and its index; delete it after), then times three opens (docs/performance.md).

    python scripts/cache_check_cost.py /scratch/cache_cost
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from capgen.data import cache

N, SHAPE = 123_287, (123_287, 256, 256, 3)


def write_split(folder: Path) -> dict:
    data, size = cache.data_path(folder, "images", "train"), int(np.prod(SHAPE))
    if not data.exists() or data.stat().st_size != size:
        with open(data, "wb") as f:  # real blocks on disk, not a sparse file; another byte every MiB
            block = 1 << 20
            for k in range(size // block):
                f.write(bytes([k % 251]) * block)
            f.write(b"\1" * (size % block))
    rng = np.random.default_rng(0)
    words = "a man woman dog cat riding sitting on top of the with table red blue street near two".split()
    captions = [[" ".join(rng.choice(words, 10)) + "." for _ in range(5)] for _ in range(N)]
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
    main(Path(sys.argv[1]))
