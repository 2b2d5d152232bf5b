"""Image files in, uint8 RGB arrays out, and the policy for samples that cannot be used.

Real data sets hold odd files: grayscale, palette, RGBA and CMYK JPEGs, PNG bytes behind a
.jpg name, photos stored sideways with an EXIF orientation tag, 16-bit PNGs and TIFFs, float
TIFFs, and now and then a truncated download or an empty file. `load_rgb` turns every
readable one into the same (H, W, 3) uint8 picture (`to_rgb8` says how, mode by mode) and
every unreadable one into a `BadSampleError` that names the file and the fix.

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
# An image file that was there when its split was read and is not now.
FIX_GONE = ("put the file back; or, if it is gone for good, set data.on_bad_sample=skip, which leaves out the images "
            "whose files are missing when the data is read")
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


class FileGone(BadSampleError):
    """An image file that was there when its split was read (its folder listed) and is not now:
    moved, deleted or on a drive unmounted since; not a bad file, and no reason to delete one."""


def load_rgb(path, size: int | None = None, fix: str = FIX_FILE) -> np.ndarray:
    """The picture in `path` as uint8 (size, size, 3), or (H, W, 3) when size is None.
    `fix` ends the BadSampleError message: what the caller's user can do about a bad file.

    PIL picks the decoder from the file's content, not its extension, so PNG bytes in a .jpg
    file load fine. The image is turned upright by its EXIF orientation tag, then converted
    to 8-bit RGB by `to_rgb8` (which says how 16-bit and float pixels are scaled; alpha is
    dropped). Resizing is bilinear (PIL's filter widens with the scale factor, so downscaling
    is antialiased) and squashes the image to a square without keeping its aspect ratio, as
    the Show-Attend-Tell recipes do.
    """
    path = str(path)
    try:
        with Image.open(path) as img:
            # Decode every pixel now, so a truncated or corrupt file fails here rather than
            # half-way through an epoch. PIL's ImageFile.LOAD_TRUNCATED_IMAGES stays False:
            # turning it on would quietly pad truncated files with grey.
            img.load()
            img = to_rgb8(ImageOps.exif_transpose(img))
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(img, dtype=np.uint8)  # (H, W, 3), a writable copy for torch
    except FileNotFoundError:
        link = f" (a symbolic link to {os.readlink(path)}, which does not exist)" if os.path.islink(path) else ""
        raise BadSampleError(path, "file not found" + link, fix) from None
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


# 16-bit unsigned integers, in each byte order PIL has a mode for.
_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb8(img: Image.Image) -> Image.Image:
    """`img`, whatever its PIL mode, as an 8-bit RGB image, by these rules:

    - 8-bit modes ("1", L, P, PA, LA, La, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV): PIL's own
      conversion (CMYK by R = (255 - C)(255 - K) / 255, YCbCr by JPEG's matrix, LAB as CIELAB
      to sRGB). Alpha is dropped, not composited: the colour channels are kept as stored
      (a premultiplied La image is divided by its alpha first), and so is the colour a
      palette's transparent entry holds.
    - Single-channel 16-bit, 32-bit and float modes (I;16, I;16B, I;16L, I;16N, I, F): grey,
      v -> round(255 * (v - lo) / (hi - lo)), where lo..hi is the type's nominal range when
      every finite value lies in it, otherwise the image's own min..max. The nominal range
      is 0..65535 for the integer modes (so 16-bit images are divided by 257; PIL also keeps
      16-bit PGM and signed 16-bit TIFF data as 32-bit "I", and a 32-bit type's full range
      would turn every real picture mid-grey) and 0..1 for float. NaN is black, +inf white,
      -inf black; a flat image (min == max) outside the nominal range is black.
    - 16-bit RGB, RGBA and LA PNGs and 16-bit RGB(A) TIFFs: PIL's decoder already keeps only
      the high byte of each sample (v -> v // 256, within 1 of the rule above), and opens
      them as RGB or RGBA.

    Known gap: PIL opens a 12-bit TIFF as I;16 with values up to 4095, so it comes out dark.
    """
    if img.mode in _UINT16_MODES or img.mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(img, dtype=np.float64), 1.0 if img.mode == "F" else 65535.0))
    if img.mode == "La":  # PIL converts La only to LA: it un-premultiplies the grey there
        img = img.convert("LA")
    return img.convert("RGB")


def _grey_to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    """(H, W) float64 values as (H, W, 3) uint8 grey, scaled as `to_rgb8` says (nominal range 0..top)."""
    finite = values[np.isfinite(values)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, top)
    if lo >= 0 and hi <= top:
        lo, hi = 0.0, top
    # A flat image has no contrast to stretch; its finite pixels become 0 (black).
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    grey = np.zeros_like(values)  # NaN and -inf stay 0
    ok = np.isfinite(values)
    grey[ok] = (values[ok] - lo) * scale
    grey[np.isposinf(values)] = 255.0
    grey = np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


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

    def elsewhere(self, where: str, reason: str, fix: str = FIX_FILE) -> None:
        """A problem found while indexing this split that belongs to another one (e.g. a repeated
        id across splits): raise under "error", so a run stops when it starts rather than when
        that split is first read; under "skip" that split drops and counts it, this one does not."""
        if self.policy == "error":
            raise BadSampleError(where, reason, fix)

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
