"""SIGTERM and SIGUSR1, what schedulers send before they stop a job: the run saves last.ckpt at
the end of the step it is in, records itself as interrupted, exits with 128 + the signal, and
`resume=` continues it exactly."""

from __future__ import annotations

import json
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

OVERRIDES = ["debug=fast", "model=lstm", "trainer.max_epochs=8", "test=false",
             "data.source.sizes={train:64,val:16,test:16}"]
STEPS = 8 * 3  # epochs x batches (debug=fast)


def step_of(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True)["global_step"])
    except Exception:  # not written yet
        return -1


@pytest.mark.slow
def test_sigterm_and_sigusr1_stop_with_a_checkpoint_and_resume_exactly(tmp_path, make_cfg):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    stops = 0
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGTERM):
        args = [*OVERRIDES, f"hydra.run.dir={run}"] if not ckpt.exists() else [f"resume={run}"]
        before = step_of(ckpt)
        proc = subprocess.Popen([sys.executable, "-m", "capgen.cli.train", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 300
        while step_of(ckpt) <= before:  # this process has written a checkpoint of its own
            assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < end
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=300)[1]
        if proc.returncode == 0:
            continue  # the run ended before the signal came: nothing to check this time
        stops += 1
        assert proc.returncode == 128 + signum, f"(seed {seed})\n{stderr[-3000:]}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["signal"] == signal.Signals(signum).name
        assert summary["resume"] == f"capgen-train resume={run}"
        assert f"Continue it with: capgen-train resume={run}" in (run / "train.log").read_text()
        assert step_of(ckpt) > before  # saved at the stop (or at the checkpoint the test waited for)
    assert stops >= 2, f"the signals came after the runs ended (seed {seed})"

    done = subprocess.run([sys.executable, "-m", "capgen.cli.train", f"resume={run}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_equals_uninterrupted(run, make_cfg, OVERRIDES, STEPS, f"seed {seed}")
