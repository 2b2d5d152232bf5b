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
