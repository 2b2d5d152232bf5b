"""capgen's GPU paths in one command: short runs of each, one line per check.

    scripts/gpu_check.sh                  # or: python scripts/gpu_check.py [--budget 480] [--keep DIR]
    python scripts/gpu_check.py --dry-run # compose every command's config, run nothing (any machine)

Checks, in order (each a fresh process, as a user would run it; shapes data, a few batches):
  train-gpu-bf16   capgen-train trainer=gpu trainer.precision=bf16-mixed debug=fast
  train-gpu-16     capgen-train trainer=gpu trainer.precision=16-mixed debug=fast
  train-ddp        capgen-train trainer=ddp debug=fast on every GPU present (on one GPU a one-process
                   DDP: Lightning's DDP strategy, sampler and sync_batchnorm wiring, no cross-GPU traffic)
  prepare-cuda     capgen-prepare features=true (the encoder runs on CUDA when there is one)
  decode-greedy    capgen-eval device=cuda decode=greedy on train-gpu-bf16's checkpoint
  decode-beam      capgen-eval device=cuda decode=beam (beam 3) on the same checkpoint
  decode-nbest     capgen-eval device=cuda decode=beam decode.n_best=3 on the same checkpoint
  benchmark        scripts/benchmark.py --device cuda --quick --decoders attn

Each prints `ok`, `failed: why` or `skipped: why`. Without a CUDA device every check is skipped
with the reason and the exit status is 0, so CI runs this script too; a failed check makes it 1.
The whole run keeps within --budget seconds (default 480, 8 minutes): a check gets at most
what is left of it, and checks that would start with less than 10 s left are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["debug=fast", "data.source.sizes={train:64,val:16,test:16}"]


@dataclass
class Check:
    name: str
    what: str  # the config a capgen command composes ("train", "prepare", "eval"), or "benchmark"
    args: list[str]
    timeout: int
    verify: Callable[[Path], str]  # the check's folder -> a one-line result; raises AssertionError
    needs: str | None = None  # a check whose output this one uses
    requires: Callable[[], str | None] = field(default=lambda: None)  # -> why to skip, or None


def _summary(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed", f"summary.json says {summary['status']}: {summary.get('error', '')}"
    cider = summary.get("metrics", {}).get("val/CIDEr")
    return f"completed, val/CIDEr {cider:.3f}" if isinstance(cider, float) else "completed"


def _features(folder: Path) -> str:
    indexes = sorted((folder / "cache").glob("features_*.json"))
    assert [p.stem for p in indexes] == ["features_test", "features_train", "features_val"], f"feature caches: {indexes}"
    return "feature caches of train, val and test written"


def _eval(folder: Path) -> str:
    report = json.loads((folder / "metrics.json").read_text())
    decode = report["decode"]
    return f"{report['images']} images, {decode['method']} (beam {decode['beam_size']}, n-best {decode['n_best']}), " \
           f"CIDEr {report['CIDEr']:.3f}"


def _benchmark(folder: Path) -> str:
    result = json.loads((folder / "bench.json").read_text())
    assert result.get("gpu"), "bench.json names no GPU"
    return f"bench.json written on {result['gpu']}"


def _bf16() -> str | None:
    import torch

    return None if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name()} has no bf16"


def checks(work: Path) -> list[Check]:
    """The checks, writing under `work` (one folder each)."""
    ckpt = work / "train-gpu-bf16" / "checkpoints" / "last.ckpt"
    return [
        Check("train-gpu-bf16", "train", ["trainer=gpu", "trainer.precision=bf16-mixed", *SMALL], 240, _summary,
              requires=_bf16),
        Check("train-gpu-16", "train", ["trainer=gpu", "trainer.precision=16-mixed", *SMALL], 240, _summary),
        Check("train-ddp", "train", ["trainer=ddp", *SMALL], 300, _summary),
        Check("prepare-cuda", "prepare", [*SMALL[1:], f"cache_dir={work / 'prepare-cuda' / 'cache'}", "features=true"],
              240, _features),
        Check("decode-greedy", "eval", [f"ckpt_path={ckpt}", "device=cuda", "decode=greedy"], 180, _eval,
              needs="train-gpu-bf16"),
        Check("decode-beam", "eval", [f"ckpt_path={ckpt}", "device=cuda", "decode=beam"], 180, _eval,
              needs="train-gpu-bf16"),
        Check("decode-nbest", "eval", [f"ckpt_path={ckpt}", "device=cuda", "decode=beam", "decode.n_best=3"], 180, _eval,
              needs="train-gpu-bf16"),
        Check("benchmark", "benchmark", ["--device", "cuda", "--quick", "--decoders", "attn"], 420, _benchmark),
    ]


def command(check: Check, folder: Path) -> list[str]:
    if check.what == "benchmark":
        return [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *check.args, "--out", str(folder / "bench.json")]
    return [sys.executable, "-m", f"capgen.cli.{check.what}", *check.args, f"hydra.run.dir={folder}"]


def no_gpu_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def run_check(check: Check, folder: Path, not_passed: set[str], seconds_left: float) -> str:
    if check.needs in not_passed:
        return f"skipped: needs {check.needs}, which did not pass"
    why = check.requires()
    if why:
        return f"skipped: {why}"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start, timeout = time.monotonic(), max(1, min(check.timeout, round(seconds_left)))
    # Its own session, so that a check that runs out of time is stopped with every process it
    # started (DDP's, the benchmark's children).
    proc = subprocess.Popen(command(check, folder), cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"failed: no result within {timeout} s" + (" (what was left of the budget)" if timeout < check.timeout else "")
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        lines = [line for line in (stderr or stdout).splitlines() if line.strip()]
        return f"failed: exit status {proc.returncode}: {lines[-1] if lines else 'no output'}"
    try:
        return f"ok ({seconds:.0f} s): {check.verify(folder)}"
    except (AssertionError, OSError, KeyError, ValueError) as e:
        return f"failed: ran, but {type(e).__name__}: {e}"


def dry_run(work: Path) -> int:
    """Compose every capgen command's Hydra config (a typo in an override fails here), run nothing."""
    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(ROOT))
    from capgen import config

    config.register()
    status = 0
    for check in checks(work):
        if check.what == "benchmark":
            print(f"{check.name:<15} composes: not a Hydra command ({' '.join(check.args)})")
            continue
        try:
            with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
                compose(check.what, overrides=check.args)
            print(f"{check.name:<15} composes: capgen-{check.what} {' '.join(check.args)}")
        except Exception as e:  # any composition error is the finding: report it and go on
            print(f"{check.name:<15} does not compose: {type(e).__name__}: {e}")
            status = 1
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=480, help="seconds after which no further check starts")
    ap.add_argument("--keep", help="write the checks' folders here (default: a temporary folder, removed)")
    ap.add_argument("--dry-run", action="store_true", help="compose every command's config; run nothing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp).resolve()
        if args.dry_run:
            return dry_run(work)
        reason = no_gpu_reason()
        start, not_passed, any_failed = time.monotonic(), set(), False
        for check in checks(work):
            if reason:
                line = f"skipped: {reason}"
            elif time.monotonic() - start > args.budget - 10:
                line = f"skipped: the {args.budget:.0f} s budget is spent"
            else:
                line = run_check(check, work / check.name, not_passed, args.budget - (time.monotonic() - start))
            if not line.startswith("ok"):
                not_passed.add(check.name)
            any_failed |= line.startswith("failed")
            print(f"{check.name:<15} {line}", flush=True)
        return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
