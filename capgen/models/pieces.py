"""Large CPU tensors made in pieces.

glibc serves a block above its mmap threshold (which never exceeds 32 MB) with a fresh mapping
and unmaps it when it is freed, so a tensor of 100 MB made at every step faults in all its
pages again each time. The cross-entropy step of a COCO-sized batch (50 images x 5 captions,
attention model, 512 dims, 9,487 words) makes two: the attention's activation (250 x 196 x 512,
100 MB, at every word) and the word layer's logits (4,250 x 9,487, 153 MB). In a process with
glibc's defaults it took 5.5 s and faulted in 1.5 million pages; made in pieces, 4.0 s and
155,000 (2-core AMD EPYC Zen 4, 2 threads, median of 4). capgen's commands also turn mmap off
process-wide (capgen.cli.allocator, 3.6 s then); the pieces keep the decoders fast in any other
process too, such as a notebook that imports capgen.models. With mmap off they cost about 2%
(same-process alternation, 6 pairs). On a GPU the caching allocator reuses blocks whatever
their size, and one piece means fewest kernels.
"""

from __future__ import annotations

import torch

CPU_PIECE_BYTES = 16 << 20  # half glibc's largest mmap threshold


def rows_per_piece(device: torch.device, row_bytes: int) -> int | None:
    """How many rows of row_bytes each one piece holds on `device` (None: all of them)."""
    if device.type != "cpu":
        return None
    return max(1, CPU_PIECE_BYTES // max(1, row_bytes))
