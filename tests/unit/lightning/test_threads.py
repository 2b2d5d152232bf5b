"""torch's thread count follows the cores other processes leave free (capgen.lightning.threads)."""

from __future__ import annotations

import logging
import os

import pytest

from capgen.lightning import threads
from capgen.lightning.callbacks import FollowFreeCores
from capgen.lightning.threads import FreeCoreThreads, Sample, busy_seconds, threads_for

STAT = """cpu  900 0 300 5000 10 0 0 0 0 0
cpu0 100 5 50 2000 3 1 2 7 0 0
cpu1 200 0 100 2500 4 3 4 0 0 0
cpu2 300 0 0 100 0 0 0 0 0 0
intr 12345
"""


def test_busy_seconds_sums_the_busy_fields_of_the_process_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    hz = os.sysconf("SC_CLK_TCK")
    # user + nice + system + irq + softirq (not idle, iowait or steal), cpu0 and cpu1 only
    assert busy_seconds(frozenset({0, 1}), stat) == pytest.approx((100 + 5 + 50 + 1 + 2 + 200 + 100 + 3 + 4) / hz)
    assert busy_seconds(frozenset({2}), stat) == pytest.approx(300 / hz)
    assert busy_seconds(frozenset({0, 7}), stat) is None  # a CPU of the set missing: the file is not this set's
    assert busy_seconds(frozenset({0}), tmp_path / "absent") is None


@pytest.mark.parametrize(("others", "cores", "most", "expected"), [
    (0.0, 2, 2, 2), (0.25, 2, 2, 2), (0.4, 2, 2, 1), (1.0, 2, 2, 1), (2.5, 2, 2, 1),
    (1.0, 8, 8, 7), (0.0, 8, 4, 4), (3.9, 8, 8, 4),
])  # fmt: skip
def test_threads_for_counts_the_cores_the_others_leave_free(others, cores, most, expected):
    assert threads_for(others, cores, most) == expected


class Machine:
    """A fake clock and /proc: `run(seconds, others)` lets `others` cores' worth of other work
    and one core of this process's work pass."""

    def __init__(self):
        self.at, self.busy, self.own = 100.0, 1000.0, 5.0
        self.set_to: list[int] = []

    def run(self, seconds: float, others: float) -> None:
        self.at += seconds
        self.own += seconds
        self.busy += seconds * (1 + others)

    def sample(self) -> Sample:
        return Sample(self.at, self.busy, self.own)


def test_the_count_drops_at_once_and_comes_back_only_after_the_others_stay_quiet(caplog):
    m = Machine()
    policy = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    m.run(0.5, others=1.0)
    assert policy.check() == 2 and m.set_to == []  # less than a second since the last reading: no reading
    m.run(0.6, others=1.0)
    with caplog.at_level(logging.INFO, logger="capgen.lightning.threads"):
        assert policy.check() == 1
    assert m.set_to == [1]
    assert "torch threads: 1 (other processes used 1.0 of this process's 2 cores" in caplog.text
    assert "OMP_NUM_THREADS" in caplog.text
    for _ in range(threads.CALM_CHECKS - 1):  # the other process ended: not yet
        m.run(1.0, others=0.0)
        assert policy.check() == 1
    m.run(1.0, others=1.0)  # busy again: the quiet checks start over
    assert policy.check() == 1
    for _ in range(threads.CALM_CHECKS):
        m.run(1.0, others=0.05)
        policy.check()
    assert policy.threads == 2 and m.set_to == [1, 2]


def test_a_long_wait_of_this_process_is_not_read_as_the_others_load_now():
    """The benchmark's parent process waited a minute for its child processes, which kept
    both cores busy, then timed steps itself: it ran them on one thread, 1.6x slower."""
    m = Machine()
    policy = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    m.at += 60.0  # this process waits (no CPU time of its own) while its children use both cores
    m.busy += 60.0 * 2
    assert policy.check() == 2 and m.set_to == []  # a fresh reading, no decision
    m.run(1.0, others=0.0)  # the children have ended
    assert policy.check() == 2 and m.set_to == []
    m.run(1.0, others=1.0)  # a real neighbour: still seen at the next reading
    assert policy.check() == 1 and m.set_to == [1]


def test_restart_reads_the_load_afresh_from_now():
    """The benchmark's parent waited for its children (both cores busy), then worked a while
    itself before its first check: over the whole window it used more than half a core, so
    only a restart keeps the children's load out of the reading."""
    m = Machine()
    policy = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    m.at += 30.0  # waiting while the children use both cores
    m.busy += 30.0 * 2
    policy.restart()
    m.run(40.0, others=0.0)  # its own work: more than half of the 70 s since the last reading
    assert policy.check() == 2 and m.set_to == []
    m.run(1.0, others=1.0)
    assert policy.check() == 1 and m.set_to == [1]


def test_a_long_batch_is_one_reading():
    """A batch longer than the wait limit, computed by this process, still decides."""
    m = Machine()
    policy = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    m.run(30.0, others=1.0)
    assert policy.check() == 1 and m.set_to == [1]


def test_changes_past_the_first_few_are_logged_at_debug_level(caplog):
    m = Machine()
    policy = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    with caplog.at_level(logging.INFO, logger="capgen.lightning.threads"):
        for _ in range(5):
            m.run(1.0, others=1.0)
            policy.check()
            for _ in range(threads.CALM_CHECKS):
                m.run(1.0, others=0.0)
                policy.check()
    assert m.set_to == [1, 2] * 5
    assert caplog.text.count("torch threads:") == threads.LOGGED_CHANGES
    assert "later changes are logged at debug level" in caplog.text


def test_a_thread_count_the_user_set_wins(monkeypatch):
    monkeypatch.setattr(threads, "_policy", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.follow_free_cores() is None
    assert FollowFreeCores().policy is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    policy = threads.follow_free_cores()
    assert isinstance(policy, FreeCoreThreads) and threads.follow_free_cores() is policy  # one per process


def test_the_callback_checks_before_every_batch_of_every_stage():
    calls = []

    class Policy:
        def check(self):
            calls.append(1)
            return 1

    callback = FollowFreeCores()
    callback.policy = Policy()
    for hook in ("on_train_batch_start", "on_validation_batch_start", "on_test_batch_start", "on_predict_batch_start"):
        getattr(callback, hook)(None, None, None, 0)
    assert len(calls) == 4


def test_a_run_counts_only_its_own_thread_changes_and_its_summary_records_them(monkeypatch, tmp_path):
    import json

    from capgen.runs.records import write_summary

    m = Machine()
    shared = FreeCoreThreads(frozenset({0, 1}), 2, m.sample, m.set_to.append, clock=lambda: m.at)
    shared.changes = 4  # an earlier job of the same sweep
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_policy", shared)
    callback = FollowFreeCores()
    assert callback.changes == 0
    m.run(1.0, others=1.0)
    callback.on_train_batch_start(None, None, None, 0)
    assert callback.changes == 1
    write_summary(tmp_path, {"val/CIDEr": 1.0}, None, None, callback.changes)
    assert json.loads((tmp_path / "summary.json").read_text())["thread_count_changes"] == 1
    write_summary(tmp_path, {"val/CIDEr": 1.0}, None, None, 0)  # a fixed count: nothing to say
    assert "thread_count_changes" not in json.loads((tmp_path / "summary.json").read_text())
