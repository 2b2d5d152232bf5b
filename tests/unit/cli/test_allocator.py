import platform
import resource

import pytest
import torch

from capgen.cli.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings exist in glibc only")
def test_a_freed_block_above_the_largest_mmap_threshold_is_reused_without_new_page_faults():
    """100 MB, as the attention activation of a COCO-sized step: glibc would mmap it afresh
    on every allocation (its threshold stops at 32 MB), faulting in all its pages again."""
    assert keep_freed_memory() is True
    size = 100 << 20
    torch.empty(size, dtype=torch.uint8).fill_(1)  # first touch: faults, then freed to the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(size, dtype=torch.uint8).fill_(1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < size // 4096 // 10, faults  # a fresh mapping would fault its 25,600 pages
