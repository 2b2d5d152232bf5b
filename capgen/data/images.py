"""Image files in, uint8 RGB arrays out, and the policy for samples that cannot be used.

Real data sets hold odd files: grayscale, palette, RGBA and CMYK JPEGs, PNG bytes behind a
.jpg name, photos stored sideways with an EXIF orientation tag, and now and then a truncated
download or an empty file. `load_rgb` turns every readable one into the same (H, W, 3) uint8
picture and every unreadable one into a `BadSampleError` that names the file and the fix.

`BadSamples` is what a source uses while it indexes a split: with `on_bad_sample="error"`
the first problem raises; with "skip" problems are collected and summed up in one log line.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

ON_BAD_SAMPLE = ("error", "skip")
FIX_FILE = "delete or replace the file, or set data.on_bad_sample=skip"
# A file that fails while training reads it: the sampler already chose it, so skipping is
# no longer possible; capgen-prepare finds every such file first.
FIX_UNREADABLE = ("delete or replace the file, or list every unreadable image with capgen-prepare "
                  "data.on_bad_sample=skip cache_dir=<folder> and train with data.cache_dir=<folder>, "
                  "which leaves them out")
# A bad file among the pictures given to capgen-caption.
FIX_GIVEN = "replace the file, or give images= a folder or pattern that leaves it out"


class BadSampleError(ValueError):
    """One unusable sample: `path` names it (a file, or an annotation entry), `reason` says why.

    Called with a single argument, that argument is the whole message: a DataLoader re-raises
    a worker's error as `type(err)(traceback_text)`, and pickling rebuilds it from its message,
    so the error keeps its type across processes.
    """

    def __init__(self, path, reason: str | None = None, fix: str = FIX_FILE):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(str(path) if reason is None else f"{path}: {reason}; {fix}")


def load_rgb(path, size: int | None = None, fix: str = FIX_FILE) -> np.ndarray:
    """The picture in `path` as uint8 (size, size, 3), or (H, W, 3) when size is None.
    `fix` ends the BadSampleError message: what the caller's user can do about a bad file.

    PIL picks the decoder from the file's content, not its extension, so PNG bytes in a .jpg
    file load fine. The image is turned upright by its EXIF orientation tag, then converted
    to RGB (grayscale, palette, RGBA and CMYK alike; alpha is dropped). Resizing is bilinear
    (PIL's filter widens with the scale factor, so downscaling is antialiased) and squashes
    the image to a square without keeping its aspect ratio, as the Show-Attend-Tell recipes do.
    """
    path = str(path)
    try:
        with Image.open(path) as img:
            # Decode every pixel now, so a truncated or corrupt file fails here rather than
            # half-way through an epoch. PIL's ImageFile.LOAD_TRUNCATED_IMAGES stays False:
            # turning it on would quietly pad truncated files with grey.
            img.load()
            img = ImageOps.exif_transpose(img).convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(img, dtype=np.uint8)  # (H, W, 3), a writable copy for torch
    except FileNotFoundError:
        raise BadSampleError(path, "file not found", fix) from None
    except IsADirectoryError:
        raise BadSampleError(path, "is a directory, not an image file", fix) from None
    except UnidentifiedImageError:
        empty = os.path.getsize(path) == 0
        reason = "empty file (0 bytes)" if empty else "not an image file PIL can read"
        raise BadSampleError(path, reason, fix) from None
    except Exception as e:
        # A malformed file can make PIL's decoders raise almost any type (OSError,
        # SyntaxError, struct.error, DecompressionBombError, ...): each means a bad file.
        raise BadSampleError(path, f"corrupt or truncated image ({type(e).__name__}: {e})", fix) from e


def check_on_bad_sample(value: str) -> str:
    if value not in ON_BAD_SAMPLE:
        raise ValueError(f"data.on_bad_sample must be one of {ON_BAD_SAMPLE}, got {value!r}")
    return value


class BadSamples:
    """The problems a source finds while indexing one split, under one `on_bad_sample` policy.

    A problem has a kind (a short noun whose plural takes an "s", e.g. "missing file"), the
    place it was found (a file, or an annotation file plus image id), a reason and a fix.
    Whether it costs the whole image or only one caption is the source's business; `summary`
    reports both counts.
    """

    def __init__(self, on_bad_sample: str, what: str):
        self.policy = check_on_bad_sample(on_bad_sample)
        self.what = what  # e.g. "coco2014 train", for the summary line
        self.kinds: Counter[str] = Counter()
        self.first: str | None = None

    def report(self, kind: str, where: str, reason: str, fix: str = FIX_FILE) -> None:
        """Raise at once under "error"; under "skip" remember it for the summary."""
        if self.policy == "error":
            raise BadSampleError(where, reason, fix)
        self.kinds[kind] += 1
        if self.first is None:
            self.first = f"{where}: {reason}"

    def exclude(self) -> None:
        """Count an image the user listed as bad (e.g. by a scan of every file) in either mode."""
        self.kinds["excluded image"] += 1

    def summary(self, kept: int, total: int) -> None:
        """Log one line if anything was skipped or dropped: kept of total images remain."""
        if not self.kinds:
            return
        counts = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in self.kinds.items())
        log.warning(
            "skipped %d of %d images in %s: %s; first: %s", total - kept, total, self.what, counts, self.first
        )
