"""scripts/benchmark.py runs end to end (--quick: tiny sizes) and writes every promised number."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from helpers import procs
from helpers.paths import REPO

SCRIPT = REPO / "scripts" / "benchmark.py"


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    # Every section, start-up too, in one run of the script (each run is a torch start-up of its own).
    cmd = [sys.executable, str(SCRIPT), "--quick", "--config", "shapes,reference,peer", "--decoders", "attn",
           "--sections", "encoder,train,decode,data,metrics,scst,startup", "--out", str(out)]
    run = procs.run(cmd, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["encoder_precision"] == "auto"  # the frozen step's encoder runs as capgen-train's would
    for config in ("shapes", "reference"):
        train = r[config]["train"]
        modes = ("features", "finetune") if config == "shapes" else ("frozen", "features", "finetune")
        for mode in modes:
            assert _positive(train[f"attn/{mode}"]["step_s"]) and _positive(train[f"attn/{mode}"]["peak_rss_mb"])
        # on cached features the encoder never runs: it gets no gradient, fine-tuning does
        assert train["attn/features"]["params_updated"] < train["attn/finetune"]["params_updated"]
        for name in ("greedy", "beam3", "beam5"):
            d = r[config]["decode"][name]
            assert _positive(d["batched_speedup"]) and _positive(d["one_at_a_time_captions_per_s"])
        for name in ("beam3_nbest3", "beam3_constrained", "diverse_beam6_groups3", "sample5_top_p0.9"):
            (rate,) = [v for k, v in r[config]["decode"][name].items() if k.endswith("_images_per_s")]
            assert _positive(rate)
        for form in ("raw", "image_cache", "feature_cache"):
            assert all(_positive(r[config]["data"][f"{form}_workers{w}_images_per_s"]) for w in (0, 1, 2))
    assert _positive(r["reference"]["decode"]["images_to_captions"]["beam3_batch_captions_per_s"])
    # the machine it ran on, and the encoder's speed against an estimated peak
    isa = r["machine"]["isa"]
    assert set(isa) in ({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}, {"asimd", "sve", "bf16"})  # x86, Arm
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    assert isa == {f: f in flags for f in isa}  # as the CPU lists them
    assert r["machine"]["cpu"] and r["machine"]["threads"] >= 1 and r["machine"]["gpu"] is None
    assert r["estimated_fp32_peak"]["estimate"] is True
    assert "machine: " in run.stdout and "estimated fp32 peak" in run.stdout
    for config in ("shapes", "reference"):
        enc = r[config]["encoder"]
        assert enc["gflop"] > 0 and _positive(enc["contiguous"]["gflops_per_s"])
        assert _positive(enc["channels_last"]["speedup_vs_contiguous"])
        if r["estimated_fp32_peak"]["gflops"]:
            assert 0 < enc["channels_last"]["share_of_estimated_fp32_peak"] < 1
    assert _positive(r["shapes"]["metrics"]["val_metrics_s"]) and "metrics" not in r["reference"]
    sc = r["shapes"]["scst"]
    assert all(_positive(sc[k]) for k in ("xe_step_s", "scst_step_s", "scst_over_xe", "reward_per_320_captions_s",
                                          "reward_share_of_scst_step", "mean_sample_tokens"))
    assert sc["captions"] == sc["batch_size"] * sc["samples"] and "scst" not in r["reference"]
    # the peer settings: features only (no encoder, data or metrics sections), 5 captions per image
    peer = r["peer"]
    assert set(peer) == {"train", "decode", "scst"}
    assert peer["train"]["captions_per_image"] == 5 and _positive(peer["train"]["attn/features"]["step_s"])
    assert peer["decode"]["max_len"] == 16 and _positive(peer["decode"]["beam3"]["batch2_captions_per_s"])
    sc = peer["scst"]
    assert sc["baseline"] == "greedy" and sc["captions_per_image_xe"] == 5 and sc["captions"] == sc["batch_size"] * 5
    assert all(_positive(sc["reward"][f"{threads}_{load}_s"]) for threads in ("default", "1_thread") for load in ("alone", "busy"))
    assert "peer settings (issue 26):" in run.stdout
    # start-up at scale (a synthetic COCO): each phase, and the train command to its first step
    startup = r["shapes"]["startup"]
    assert startup["scale"]["images"] == 1200 and startup["scale"]["captions"] == 6030 and "startup" not in r["reference"]
    phases = startup["phases"]
    for key in ("index_train_s", "index_val_s", "index_test_s", "vocabulary_s", "references_s", "train_loader_s", "imports_s",
                "peak_rss_mb"):
        assert isinstance(phases[key], float) and phases[key] >= 0, key
    assert phases["train_images"] == 1200 - 100 - 100  # train + restval of the synthetic Karpathy file
    command = startup["train_command"]
    assert 0 < command["to_first_step_s"] < command["end_to_end_s"] and _positive(command["peak_rss_mb"])


def test_unknown_options_are_clear_errors(monkeypatch, capsys):
    # In this process (the script's checks come before any measurement): no second torch start-up.
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for args, error in ((["--sections", "trian"], "--sections: unknown ['trian']"),
                        (["--encoder-precision", "fp16"], "--encoder-precision: encoder_precision='fp16': use auto")):
        # --threads 1: this worker's own count (auto would follow the free cores from here on)
        monkeypatch.setattr(sys, "argv", ["benchmark.py", "--threads", "1", *args])
        with pytest.raises(SystemExit) as stop:
            benchmark.main()
        assert stop.value.code == 2 and error in capsys.readouterr().err
