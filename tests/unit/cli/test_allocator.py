import platform

import pytest

from capgen.cli.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings exist in glibc only")
def test_malloc_thresholds_take_effect_on_glibc():
    assert keep_freed_memory() is True
