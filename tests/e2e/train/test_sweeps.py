"""Sweeps as a user runs them (`capgen-train -m ...`): folders and TensorBoard runs named by
the overrides, HPARAMS entries with final metrics, failed jobs, capgen-compare and
`capgen-eval run=` on the result, and the Optuna search."""

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from capgen.lightning.inference import load_module

from helpers import procs
from helpers.commands import run_eval
from helpers.workflow import SMALL, UNNAMED, capgen, hparams_entry, job_dirs, read_events, small, summary, tensorboard_runs

pytestmark = pytest.mark.slow  # each test runs capgen-train in subprocesses, jobs one after another

MODELS = ["rnn", "lstm", "attn"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """`capgen-train -m model=rnn,lstm,attn` (2 epochs, hidden 40, tested with beam 2) on tiny data."""
    out = tmp_path_factory.mktemp("sweep")
    done = capgen("train", "-m", "model=" + ",".join(MODELS), "model.decoder.hidden_dim=40",
                  "model.module.test.decode.beam_size=2", "trainer.max_epochs=2", *small("logger=tensorboard", "callbacks.caption_samples.num_samples=4"), UNNAMED,
                  f"hydra.sweep.dir={out}", cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_sweep_writes_one_folder_per_job_named_by_its_overrides(sweep):
    names = [p.name for p in job_dirs(sweep)]
    assert names == [f"{i}_model.decoder.hidden_dim=40,model.module.test.decode.beam_size=2,model={m}"
                     for i, m in enumerate(MODELS)]
    for job in job_dirs(sweep):
        assert summary(job)["status"] == "completed"
        assert (job / summary(job)["best_checkpoint"]).is_file()


def test_each_job_is_one_tensorboard_run_named_by_its_overrides_with_an_hparams_entry(sweep):
    runs = tensorboard_runs(sweep)
    assert len(runs) == 6  # each job's curves and, beside them, its HPARAMS session
    for job, model in zip(job_dirs(sweep), MODELS):
        overrides = job.name.split("_", 1)[1]
        (name,) = [n for n in runs if n.startswith(job.name + "/") and not n.endswith("/best")]
        assert name == f"{job.name}/tb/{overrides}"  # the name says what the run changed
        events, session = read_events(runs[name]), read_events(runs[f"{name}/best"])
        params, experiment = hparams_entry(session)
        assert params["group/model"] == model and params["group/model/encoder"] == "small_cnn"
        assert params["model/decoder/hidden_dim"] == 40 and params["trainer/precision"] == "32-true"
        assert params["model/module/optimizer/lr"] == pytest.approx(2e-3)
        assert params["overrides"] == overrides
        assert experiment is False  # TensorBoard builds the table from every session, differing columns first
        assert hparams_entry(events) == ({}, False)

        # No one-point hp/* cards beside the curves: the session's scalars are the result under
        # the curves' own tags, the best epoch's val/* at the step of that epoch's point.
        assert not [t for t in events.Tags()["scalars"] if t.startswith("hp/")]
        assert set(session.Tags()["scalars"]) == {t for t in events.Tags()["scalars"] if t.startswith(("val/", "test/"))}
        final = summary(job)["metrics"]
        curve = [(e.step, e.value) for e in events.Scalars("val/CIDEr")]
        assert len(curve) == 2
        [best] = [(e.step, e.value) for e in session.Scalars("val/CIDEr")]
        assert best == max(curve, key=lambda p: p[1]) and best[1] == pytest.approx(final["val/CIDEr"])
        [(_, test)] = [(e.step, e.value) for e in session.Scalars("test/CIDEr")]
        assert test == pytest.approx(final["test/CIDEr"]) and math.isfinite(final["test/BLEU-4"])


def test_every_run_logs_the_same_sample_images_each_epoch(sweep):
    seen = []
    for name, run in tensorboard_runs(sweep).items():
        if name.endswith("/best"):  # the HPARAMS sessions: the result, no images
            continue
        events = read_events(run)
        for k in range(4):  # callbacks.caption_samples.num_samples
            assert len(events.Images(f"val_samples/{k}")) == 2  # one per epoch, for every model
        tables = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("val/captions/text_summary")]
        ids = [re.findall(r"^\| (\d+) \|", t, flags=re.M) for t in tables]
        assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 4
        seen.append(ids[0])
    assert seen[0] == seen[1] == seen[2]  # so runs can be compared image by image


def test_compare_lists_the_runs_with_their_overrides_and_metrics(sweep, tmp_path):
    done = procs.compare_without_torch(str(sweep), "--markdown", str(tmp_path / "runs.md"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["model"])  # the settings of all runs above it
    assert lines[0].startswith("all runs: ") and "model.decoder.hidden_dim=40" in " ".join(lines[:head])
    assert lines[head].split() == ["model", "status", "val/CIDEr", "val/BLEU-4", "test/CIDEr", "test/BLEU-4", "run"]
    rows = [line.split() for line in lines[head + 1:]]
    assert sorted(r[0] for r in rows) == sorted(MODELS)
    ciders = [float(r[2]) for r in rows]
    assert ciders == sorted(ciders, reverse=True)  # best first
    for row in rows:
        (job,) = [j for j in job_dirs(sweep) if j.name.endswith(f"model={row[0]}")]
        final = summary(job)["metrics"]
        assert row[1] == "completed"
        assert row[-1] == job.name or (row[-1].endswith("…") and job.name.startswith(row[-1][:-1]))  # cut to 120 columns
        assert [float(v) for v in row[2:6]] == pytest.approx(
            [final[m] for m in ("val/CIDEr", "val/BLEU-4", "test/CIDEr", "test/BLEU-4")], abs=5e-5)
    markdown = (tmp_path / "runs.md").read_text().splitlines()
    assert "| model | status | val/CIDEr | val/BLEU-4 | test/CIDEr | test/BLEU-4 | run |" in markdown
    assert sum(line.startswith("| ") for line in markdown) == 4  # header and 3 runs


def test_eval_of_a_run_folder_uses_its_best_checkpoint_data_and_model_settings(sweep, tmp_path):
    (job,) = [j for j in job_dirs(sweep) if j.name.endswith("model=lstm")]
    report = run_eval(tmp_path / "a", f"run={job}")
    assert report["checkpoint"] == str(job / summary(job)["best_checkpoint"])
    assert report["images"] == 16  # the run's test split, not eval.yaml's 500-image one
    assert report["decode"]["method"] == "beam" and report["decode"]["beam_size"] == 2  # the run's test decode
    net = load_module(report["checkpoint"]).net
    assert type(net.decoder).__name__ == "LSTMDecoder" and net.decoder.rnn.hidden_size == 40

    # Overrides on top of the run's settings.
    report = run_eval(tmp_path / "b", f"run={job}", "split=val", "decode=greedy", "data.source.sizes.val=8")
    assert (report["split"], report["images"], report["decode"]["method"]) == ("val", 8, "greedy")
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["images"] == 8


def test_compare_paired_compares_two_jobs_on_their_per_image_test_scores(sweep, tmp_path):
    attn, lstm = ([j for j in job_dirs(sweep) if j.name.endswith(f"model={m}")][0] for m in ("attn", "lstm"))
    done = procs.compare_without_torch("--paired", str(attn), str(lstm), "--resamples", "500", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "over the 16 test images both were tested on (A 16, B 16), 500 resamples, seed 0" in lines[2]
    cider = lines[4].split()
    assert cider[0] == "CIDEr"
    # each side's mean of its per-image CIDEr-D is the run's corpus test/CIDEr (CIDEr-D is a mean over images)
    assert [float(v) for v in cider[1:4]] == pytest.approx(
        [summary(attn)["metrics"]["test/CIDEr"], summary(lstm)["metrics"]["test/CIDEr"],
         summary(attn)["metrics"]["test/CIDEr"] - summary(lstm)["metrics"]["test/CIDEr"]], abs=1e-4)


def test_eval_of_a_run_folder_without_a_finished_run_says_what_to_do(sweep, tmp_path):
    (job,) = [j for j in job_dirs(sweep) if j.name.endswith("model=rnn")]
    unfinished = tmp_path / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text((job / ".hydra" / "config.yaml").read_text())
    with pytest.raises(ValueError, match="did not finish.*give ckpt_path="):
        run_eval(tmp_path / "out", f"run={unfinished}")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_eval(tmp_path / "out", f"run={tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="give one of them"):
        run_eval(tmp_path / "out", f"run={job}", f"ckpt_path={job / summary(job)['best_checkpoint']}")


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    done = capgen("train", "-m", "model=rnn", "model.decoder.hidden_dim=-1,16", "test=false", *SMALL, UNNAMED,
                  f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    failed, ok = job_dirs(tmp_path)
    assert done.returncode != 0  # the sweep reports the failure...
    assert "model.decoder.hidden_dim=-1: must be a positive whole number, e.g. model.decoder.hidden_dim=256" in done.stderr and str(failed / "error.txt") in done.stderr
    assert summary(ok)["status"] == "completed"  # ...after running the job after it
    assert (ok / summary(ok)["best_checkpoint"]).is_file()
    assert summary(failed) == {"status": "failed", "error": "ValueError: model.decoder.hidden_dim=-1: must be a positive whole number, e.g. model.decoder.hidden_dim=256",
                               "traceback": "error.txt"}
    traceback = (failed / "error.txt").read_text()
    assert traceback.startswith("Traceback") and "capgen/models/decoders.py" in traceback

    # The failed job is no row of the table (its setting makes no column): it is listed below it.
    listed = procs.compare_without_torch(str(tmp_path), cwd=tmp_path).stdout.splitlines()
    header = next(i for i, line in enumerate(listed) if line.startswith("status"))
    assert [line.split()[0] for line in listed[header + 1:-2]] == ["completed"]
    assert "model.decoder.hidden_dim=16" in " ".join(listed[:header])  # shared by every row: above the table
    assert listed[-2:-1] == ["runs that did not complete:"]
    assert listed[-1].startswith(f"  {failed.name}: failed: ValueError: model.decoder.hidden_dim=-1: must be a positive")


def test_optuna_search_runs_its_trials_and_maximises_the_best_val_cider(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra: pip install -e '.[sweep]'")
    done = capgen("train", "hparams_search=attn_optuna", "hydra.sweeper.n_trials=3", "test=false", *SMALL, UNNAMED,
                  f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 3 and len({j.name.split("_", 1)[1] for j in jobs}) == 3  # 3 different trials
    results = (tmp_path / "optimization_results.yaml").read_text()
    best = max(jobs, key=lambda j: summary(j)["metrics"]["val/CIDEr"])
    best_value = float(re.search(r"best_value: (\S+)", results).group(1))
    assert best_value == pytest.approx(summary(best)["metrics"]["val/CIDEr"])
    assert f"model.decoder.hidden_dim: {best.name.split('model.decoder.hidden_dim=')[1].split(',')[0]}" in results
    for job in jobs:
        assert summary(job)["status"] == "completed"
        assert OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.runtime.choices.model == "attn"


def test_tensorboard_opens_on_the_curves_and_its_hparams_table_leads_with_what_differs(sweep):
    """What TensorBoard itself serves for the sweep's folder (its HTTP API, as its pages ask)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = procs.start([sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--port", str(port),
                          "--host", "127.0.0.1", "--load_fast=false"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def get(path: str, **query: str):
            url = f"http://127.0.0.1:{port}/data/plugin/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
            for _ in range(120):  # start-up and the first load of the event files
                try:
                    with urllib.request.urlopen(url, timeout=10) as answer:
                        return json.load(answer)
                except (urllib.error.URLError, ConnectionError):
                    assert server.poll() is None, server.stderr.read().decode()[-2000:]
                    time.sleep(0.5)
            raise AssertionError(f"TensorBoard did not answer {url}")

        # CUSTOM SCALARS: one first category with the monitored metric, BLEU-4 and the losses.
        [category] = get("custom_scalars/layout")["category"]
        assert [c["title"] for c in category["chart"]] == ["val/CIDEr", "val/BLEU-4", "train/loss", "val/loss"]
        # Scalars / Time Series: no hp/* cards.
        for _ in range(60):
            tags = get("scalars/tags")
            if len(tags) == 6:  # every run loaded
                break
            time.sleep(0.5)
        assert len(tags) == 6 and not [t for run in tags.values() for t in run if t.startswith("hp/")]
        # HPARAMS: one row per job, the settings that differ between them first, the result as metrics.
        experiment = get("hparams/experiment", request=json.dumps({"experimentName": ""}))
        columns = [h["name"] for h in experiment["hparamInfos"]]
        differing = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
        assert {"group/model", "overrides"} <= set(differing) and columns[: len(differing)] == differing
        assert not [c for c in columns if c.endswith("_target_")]  # class paths: the groups chosen name them
        metrics = {(m["name"]["tag"], m["name"].get("group", "")) for m in experiment["metricInfos"]}
        assert {("val/CIDEr", ""), ("test/CIDEr", ""), ("val/BLEU-4", "")} <= metrics
        groups = get("hparams/session_groups", request=json.dumps(
            {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
             "colParams": [], "startIndex": 0, "sliceSize": 100}))["sessionGroups"]
        assert sorted(g["name"].split("/", 1)[0] for g in groups) == [job.name for job in job_dirs(sweep)]
        for group in groups:
            job = sweep / group["name"].split("/", 1)[0]
            value = {(m["name"]["tag"]): m["value"] for m in group["metricValues"]}
            assert value["val/CIDEr"] == pytest.approx(summary(job)["metrics"]["val/CIDEr"])
    finally:
        procs.end(server)
