"""scripts/gpu_check.sh: on a machine without CUDA every check is skipped with its reason and the
exit status is 0 (so CI runs it); every capgen command it would run on a GPU composes."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
CHECKS = ["train-gpu-bf16", "train-gpu-16", "train-ddp", "prepare-cuda", "decode-greedy", "decode-beam", "benchmark"]


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
    run = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
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
