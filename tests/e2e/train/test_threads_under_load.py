"""torch's thread count follows the cores that other processes leave free, read from the real
/proc/stat while another process holds a core (capgen.lightning.threads)."""

import sys
import time

import pytest

from capgen.lightning import threads
from capgen.lightning.threads import FreeCoreThreads

from helpers import procs

SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"


def test_the_thread_count_drops_while_another_process_holds_a_core():
    cpus = threads._cpus()
    if len(cpus) < 2:
        pytest.skip("one core: no thread to give up")
    set_to = []
    policy = FreeCoreThreads(cpus, len(cpus), lambda: threads._sample(cpus), set_to.append)
    busy = procs.start([sys.executable, "-c", SPIN])
    try:
        time.sleep(1.5)  # the busy process holds one core; this one sleeps
        assert policy.check() <= len(cpus) - 1
        assert set_to == [policy.threads]
    finally:
        procs.end(busy)
