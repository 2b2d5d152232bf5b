"""glibc malloc settings for CPU training and decoding.

A step allocates and frees tensors of several MB each (the attention activation of a beam-3
batch of 64 images is 192 x 64 x 128 floats, 6 MB), and at COCO sizes of 100 MB (250 captions
x 196 cells x 512 attention dims, every step of a batch of 50 images with 5 captions each).
glibc serves blocks above its mmap threshold with a fresh mmap and unmaps them on free, so
each step pays the page faults of touching new memory again: add + sigmoid on the 6 MB tensor
took 4.2 ms instead of 0.65 ms. The threshold adapts by itself only sometimes (it depends on
earlier frees), so timings also flipped between identical runs. Fixing both thresholds keeps
freed blocks in the heap for reuse; the price is that the process keeps its peak heap instead
of returning it. The mmap threshold cannot exceed 32 MB, so blocks above it are served from
the heap by allowing no mmap at all: the cross-entropy step of that COCO-sized batch
(attention model, 512 dims, 9,487 words) took 3.8 s instead of 5.4 s, its peak RSS 4.5 GB
instead of 4.1 GB (2-core AMD EPYC Zen 4, 2 threads, torch 2.14.1).

Two limits, measured with a loop that allocates and frees one 40 or 100 MB block: the first
5 to 8 blocks are not reused yet (a small block freed beside each one waits in glibc's
per-thread cache, which holds 7 of a size, and keeps it from merging), so the heap grows by
that many copies before it settles; and allocations made in a thread other than the main one
come from a secondary arena, whose heaps stop at 64 MB, so glibc still mmaps blocks above that
there. Training, evaluation and capgen-caption run in the main thread; the demo's gradio
handlers do not, but their one-image requests stay far below that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Serve every block from the heap (no mmap) and keep up to 1 GB of freed heap in the
    process. Returns whether the settings took effect (False where the C library is not glibc)."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        log.debug("not glibc: malloc thresholds left as they are")
        return False
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all([bool(libc.mallopt(name, value)) for name, value in settings])
