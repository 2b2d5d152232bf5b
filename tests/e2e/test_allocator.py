import json
import platform
import sys

import pytest

from tests.helpers import procs

# A step-like loop in a fresh process (the heap's state decides where blocks land, so in a test
# worker's heap after other tests the result would depend on the test order): each iteration
# allocates a 40 MB block (above glibc's largest mmap threshold, 32 MB) and frees it. The
# control must not import capgen.cli at all: importing it applies the settings.
_LOOP = """
import json, resource, sys, torch
settings = None
if sys.argv[1] == "set":
    from capgen.cli.allocator import keep_freed_memory
    settings = keep_freed_memory()
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(40 << 20, dtype=torch.uint8).fill_(1)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"settings": settings, "faults": faults}))
"""
_PAGES = (40 << 20) // 4096  # 10,240 pages: what a fresh mapping faults in


def _faults(mode: str) -> dict:
    done = procs.run([sys.executable, "-c", _LOOP, mode], timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings exist in glibc only")
def test_a_block_above_the_largest_mmap_threshold_is_reused_from_the_heap_once_the_loop_is_steady():
    """The attention activation of a COCO-sized step is 100 MB. glibc mmaps such a block afresh
    on every allocation and faults in all its pages again; with capgen's settings freed blocks
    stay in the heap. The first few may not be reused yet (a small block freed beside each one
    waits in glibc's per-thread cache, which holds 7 per size, so they do not merge), which is
    why only the loop's last third must be free of faults."""
    plain, kept = _faults("plain"), _faults("set")
    assert kept["settings"] is True
    assert min(plain["faults"][16:]) > _PAGES * 0.9, plain  # the control: mmapped every time
    assert sum(kept["faults"][16:]) < _PAGES // 10, kept


# The attention decoder's teacher-forced step, forward and backward, in a process that never
# imports capgen.cli (a notebook): 100 captions x 196 cells x 512 dims make a 40 MB activation
# per word, above the mmap threshold unless it is made in pieces (capgen.models.pieces). glibc
# is set as its dynamic threshold ends up (32 MB, its largest) with the heap's top kept: then
# only the size rule decides, where its default trimming of the top would add faults to both
# at random (0.3-0.6 of whole's in pieces, measured).
_STEP = """
import ctypes, json, resource, sys, torch
libc = ctypes.CDLL("libc.so.6")
assert libc.mallopt(-3, 32 << 20) == 1  # M_MMAP_THRESHOLD: glibc's largest
assert libc.mallopt(-1, 2**31 - 1) == 1  # M_TRIM_THRESHOLD: the heap's top kept
from capgen.models import AttentionDecoder, pieces
from capgen.models.decoders import Rows
from capgen.models.losses import word_layer_loss
if sys.argv[1] == "whole":
    pieces.CPU_PIECE_BYTES = 1 << 40
torch.manual_seed(0)
dec = AttentionDecoder(vocab_size=50, feature_dim=64, embed_dim=16, hidden_dim=16, attn_dim=512, dropout=0.0)
feats, tokens = torch.randn(20, 196, 64), torch.randint(4, 50, (100, 5))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    hidden, _ = dec(feats, tokens[:, :-1], Rows.each(20, 5), words=False)
    word_layer_loss(dec.out, hidden, tokens[:, 1:]).backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _step_faults(mode: str) -> list[int]:
    done = procs.run([sys.executable, "-c", _STEP, mode], timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mmap threshold is what the pieces keep under")
def test_the_attention_step_made_in_pieces_maps_no_fresh_blocks_without_capgens_malloc_settings():
    whole, pieces = _step_faults("whole"), _step_faults("pieces")
    # whole: each word's 40 MB activation mapped afresh at every step, 4 words x 10,240 pages
    # (its gradient is computed in place in it); in pieces the heap's blocks are reused, all
    # but a few while the heap settles (at most 0.09 of whole's over the last 4 steps, 3 runs)
    assert min(whole[2:]) > 3.5 * _PAGES, whole
    assert sum(pieces[2:]) < sum(whole[2:]) / 6, (pieces, whole)
