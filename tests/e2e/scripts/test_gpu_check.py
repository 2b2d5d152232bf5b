"""scripts/gpu_check.sh: on a machine without CUDA every check is skipped with its reason and the
exit status is 0 (so CI runs it); every capgen command it would run on a GPU composes."""

import importlib.util
import os
import sys

from helpers import procs
from helpers.paths import REPO

SCRIPTS = REPO / "scripts"
CHECKS = ["train-gpu-bf16", "train-gpu-16", "train-ddp", "prepare-cuda", "decode-greedy", "decode-beam", "decode-nbest", "benchmark"]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPTS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["gpu_check"]
    return module


def test_without_cuda_every_check_is_skipped_with_its_reason(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU-only, also on a machine with a GPU
    run = procs.run(["bash", str(SCRIPTS / "gpu_check.sh")], cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == CHECKS
    for line in lines:
        assert line.split(None, 1)[1] == "skipped: no CUDA device (torch.cuda.is_available() is False)", line
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_every_gpu_command_composes(tmp_path, capsys, monkeypatch):
    """The GPU paths cannot run here; their Hydra overrides (trainer=gpu, 16-mixed, ddp, device=cuda...)
    are checked against the configs, so a renamed setting fails here and not first on a GPU."""
    gpu_check = _script()
    assert gpu_check.dry_run(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == CHECKS
    assert all(" composes: " in line for line in lines), lines
    bad = gpu_check.Check("typo", "train", ["trainer.precison=16-mixed"], 1, lambda _: "")
    monkeypatch.setattr(gpu_check, "checks", lambda work: [bad])
    assert gpu_check.dry_run(tmp_path) == 1
    assert "typo            does not compose" in capsys.readouterr().out


def test_the_harness_runs_checks_and_reports_each_in_one_line(tmp_path):
    """The GPU checks' own runner and result readers, on CPU twins of the GPU commands (the GPU
    ones cannot run here): a training run and an evaluation of its checkpoint pass, a check that
    runs out of time fails with its process group stopped, and a check whose input failed is
    skipped."""
    g = _script()
    train = g.Check("train-cpu", "train", ["trainer=cpu", *g.SMALL, "test=false"], 300, g._summary)
    ckpt = tmp_path / "train-cpu" / "checkpoints" / "last.ckpt"
    evaluate = g.Check("eval-cpu", "eval", [f"ckpt_path={ckpt}", "device=cpu", "decode=beam", "decode.n_best=2"], 300, g._eval,
                       needs="train-cpu")
    not_passed = set()
    line = g.run_check(train, tmp_path / "train-cpu", not_passed, 600)
    assert line.startswith("ok (") and "completed, val/CIDEr" in line, line
    line = g.run_check(evaluate, tmp_path / "eval-cpu", not_passed, 600)
    assert line.startswith("ok (") and "16 images, beam (beam 3, n-best 2), CIDEr" in line, line

    slow = g.Check("slow", "train", ["trainer=cpu", *g.SMALL], 300, g._summary)
    assert g.run_check(slow, tmp_path / "slow", not_passed, 2) == (
        "failed: no result within 2 s (what was left of the budget)")
    assert g.run_check(evaluate, tmp_path / "eval-2", {"train-cpu"}, 600) == "skipped: needs train-cpu, which did not pass"
