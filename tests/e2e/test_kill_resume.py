"""A real capgen-train process killed with SIGKILL again and again, resumed each time.

Every survivor's last.ckpt must load, the run must stay in its one folder, and the finished
run must equal an uninterrupted one: the same weights and the same TensorBoard curves, with
no doubled tail where a killed run had logged past its last checkpoint.

Checkpoint writes are slowed down in the killed processes (each write trickles out in 8
pieces over about a third of a second, through the real AtomicCheckpointIO code) and half
of the kills are aimed at a moment when `last.ckpt.tmp` is being written, so the test
really kills during writes, not only between them.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_exact_resume import assert_equals_uninterrupted

OVERRIDES = ["debug=fast", "model=lstm", "trainer.max_epochs=6", "test=false",
             "data.source.sizes={train:64,val:16,test:16}"]
STEPS = 6 * 3  # epochs x batches (debug=fast)

# capgen-train with slow checkpoint writes: `open` inside capgen.atomic hands out files
# whose write() trickles the bytes out, so write_atomically's own code runs, only slower.
SLOW_TRAIN = """
import builtins, sys, time
import capgen.atomic as ck

class Trickle:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        view = memoryview(data)
        step = max(1, len(view) // 8)
        for i in range(0, len(view), step):
            self.f.write(view[i : i + step])
            self.f.flush()
            time.sleep(0.04)
        return len(view)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

ck.open = lambda path, mode: Trickle(builtins.open(path, mode))
from capgen.cli.train import main
main()
"""


def loads(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:  # any failure to read counts: a torn file is exactly what is tested for
        return False
    return True


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < end, "timed out waiting for the training process"
        time.sleep(0.005)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, make_cfg):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    tmp = ckpt.with_name("last.ckpt.tmp")
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    torn_writes = 0
    for kill in range(4):
        args = [*OVERRIDES, f"hydra.run.dir={run}"] if kill == 0 else [f"resume={run}"]
        step_before = torch.load(ckpt, weights_only=True)["global_step"] if kill else -1
        stale = tmp.stat().st_mtime_ns if tmp.exists() else None  # a torn .tmp left by an earlier kill
        proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kill % 2:  # aim inside one of this process's checkpoint writes
            wait_for(lambda: tmp.exists() and tmp.stat().st_mtime_ns != stale, proc)
            time.sleep(rng.uniform(0, 0.2))
        else:  # any moment after this process wrote a checkpoint of its own
            wait_for(lambda: ckpt.exists() and torch.load(ckpt, weights_only=True)["global_step"] > step_before, proc)
            time.sleep(rng.uniform(0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if tmp.exists() and tmp.stat().st_mtime_ns != stale and not loads(tmp):
            torn_writes += 1  # this kill cut a write short
        assert loads(ckpt), f"last.ckpt unreadable after kill {kill} (seed {seed})"
    assert torn_writes >= 1, f"no kill landed inside a checkpoint write (seed {seed})"

    done = subprocess.run([sys.executable, "-m", "capgen.cli.train", f"resume={run}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # One folder: no outputs/<date> beside it, the earlier configs kept in .hydra/before-resume-*.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert list((run / ".hydra").glob("before-resume-*/config.yaml"))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 5
    assert_equals_uninterrupted(run, make_cfg, OVERRIDES, STEPS, f"seed {seed}")
