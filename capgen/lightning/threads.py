"""torch's CPU thread count follows the cores that other processes leave free.

PyTorch's CPU kernels run on OpenMP threads, one per core, and between two parallel regions
the waiting threads spin (libgomp's default) instead of sleeping. With the cores to itself a
process gains from that: no wake-up per region. When another process holds a core, a
spinning thread takes the time slices its partner needs and every region waits for the busy
core: on a 2-core machine a training step took 3-5x as long, an SCST step 8-12x
(docs/performance.md, "A shared machine"). Sleeping instead (OMP_WAIT_POLICY=PASSIVE) fixes
the loaded case but costs 1.4-1.7x on an idle machine, and a fixed single thread costs 1.7x.

So capgen keeps the spinning and changes the thread count, between steps, to the cores of its
CPU set that other processes left free over the last second: all of them on an idle machine,
fewer (at least one) as soon as something else runs, all again once the others have been
quiet for a few seconds. Other processes' use is read from /proc/stat (busy time of this
process's CPUs) less this process's own CPU time, between two checks: a second apart, or a
batch apart where a batch takes longer. A check after a long wait of this process (over 10 s
in which it used less than half a core) decides nothing and starts a fresh reading: what ran
during the wait (its own child processes, say) had ended when the work resumed.

A thread count set by the user always wins: with OMP_NUM_THREADS in the environment (or where
/proc/stat cannot be read) capgen never changes it. Sums split over 2 threads round
differently from sums over 1, so a run whose thread count changed equals one at a fixed
count only to float rounding (about 1e-7 relative in a step's gradients): for runs equal to
the last bit across machines and loads, fix the count with OMP_NUM_THREADS.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0  # how often the load is read (a /proc/stat read costs about 50 us)
CALM_CHECKS = 3  # threads are added back only after this many checks in a row allow more
FREE_MARGIN = 0.3  # a core counts as free while other processes use at most 0.3 of it
LOGGED_CHANGES = 3  # changes logged at INFO level; later ones at DEBUG (a flapping load)
# A reading this old, over which this process itself used less than half a core, spans a wait
# (for its own child processes, another rank, the next job of a sweep): the others' load in it
# is history, so a fresh reading starts instead of a decision.
STALE_AFTER_S = 10.0


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    busy: float  # busy CPU seconds of the process's CPUs since boot (all processes)
    own: float  # this process's CPU seconds (all its threads)


def busy_seconds(cpus: frozenset[int], stat: Path = Path("/proc/stat")) -> float | None:
    """Busy seconds (user, nice, system, irq, softirq) of `cpus` since boot, from /proc/stat's
    per-CPU lines; None where they cannot be read or do not cover every CPU of the set."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks, total, seen = os.sysconf("SC_CLK_TCK"), 0, 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus and len(fields) >= 7:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
            total, seen = total + user + nice + system + irq + softirq, seen + 1
    return total / ticks if seen == len(cpus) else None


def threads_for(others: float, cores: int, most: int) -> int:
    """The thread count for `cores` CPUs of which other processes use `others` cores' worth."""
    return max(1, min(most, math.floor(cores - others + FREE_MARGIN)))


class FreeCoreThreads:
    """Sets the thread count (`set_threads`) to the free cores; call `check()` between steps.
    `cpus`: the process's CPU set; `most`: the count on an idle machine (torch's default);
    `sample`: reads a Sample, `clock`: the time it stamps them with (both injected by the tests)."""

    def __init__(self, cpus: frozenset[int], most: int, sample: Callable[[], Sample | None],
                 set_threads: Callable[[int], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.cpus, self.most, self.sample, self.set_threads, self.clock = cpus, most, sample, set_threads, clock
        self.threads, self.changes, self.calm = most, 0, 0
        self.last = sample()

    def check(self) -> int:
        """Read the load if a second has passed and change the thread count if it calls for it;
        the thread count now."""
        # Called before every batch: the clock alone until a second has passed, /proc/stat only then.
        if self.last is None or self.clock() - self.last.at < CHECK_EVERY_S:
            return self.threads
        now = self.sample()
        if now is None:
            return self.threads
        elapsed, own = now.at - self.last.at, now.own - self.last.own
        others = max(0.0, (now.busy - self.last.busy) - own) / elapsed
        self.last = now
        if elapsed > STALE_AFTER_S and own < 0.5 * elapsed:
            return self.threads
        wanted = threads_for(others, len(self.cpus), self.most)
        if wanted < self.threads:
            self._change(wanted, others)
        elif wanted > self.threads:
            self.calm += 1  # more only once the others have been quiet for CALM_CHECKS checks
            if self.calm >= CALM_CHECKS:
                self._change(wanted, others)
        else:
            self.calm = 0
        return self.threads

    def restart(self) -> None:
        """Start a fresh reading now: for a caller that knows the time since the last check says
        nothing about the load its next work will meet (scripts/benchmark.py, after waiting for
        the measurements it ran in child processes)."""
        now = self.sample()
        if now is not None:
            self.last, self.calm = now, 0

    def _change(self, threads: int, others: float) -> None:
        self.set_threads(threads)
        self.threads, self.calm, self.changes = threads, 0, self.changes + 1
        level = logging.INFO if self.changes <= LOGGED_CHANGES else logging.DEBUG
        log.log(level, "torch threads: %d (other processes used %.1f of this process's %d cores over the last "
                "second; OMP_NUM_THREADS fixes the count)%s", threads, others, len(self.cpus),
                "; later changes are logged at debug level" if self.changes == LOGGED_CHANGES else "")


_policy: FreeCoreThreads | None = None  # one per process: a sweep's jobs share it


def _cpus() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset(range(os.cpu_count() or 1))


def _sample(cpus: frozenset[int]) -> Sample | None:
    busy = busy_seconds(cpus)
    return None if busy is None else Sample(time.monotonic(), busy, time.process_time())


def follow_free_cores() -> FreeCoreThreads | None:
    """The process's thread policy (made on first use, then the same one); None where the user
    fixed the count (OMP_NUM_THREADS) or the load cannot be read."""
    global _policy
    if "OMP_NUM_THREADS" in os.environ:
        return None
    if _policy is None:
        import torch  # here: the policy's readers need none of it, and importing this module stays cheap

        cpus = _cpus()
        _policy = FreeCoreThreads(cpus, torch.get_num_threads(), lambda: _sample(cpus), torch.set_num_threads)
    return _policy if _policy.last is not None else None
