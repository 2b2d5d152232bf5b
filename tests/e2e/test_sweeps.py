"""Sweeps as a user runs them (`capgen-train -m ...`): folders and TensorBoard runs named by
the overrides, HPARAMS entries with final metrics, failed jobs, capgen-compare and
`capgen-eval run=` on the result, and the Optuna search."""

import json
import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from capgen.training.evaluate import load_module

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
    assert len(runs) == 3
    for job, model in zip(job_dirs(sweep), MODELS):
        overrides = job.name.split("_", 1)[1]
        (name,) = [n for n in runs if n.startswith(job.name + "/")]
        assert name == f"{job.name}/tb/{overrides}"  # the name says what the run changed
        events = read_events(runs[name])
        params, metric_names = hparams_entry(events)
        assert params["group/model"] == model and params["group/model/encoder"] == "small_cnn"
        assert params["model/decoder/hidden_dim"] == 40 and params["trainer/precision"] == "32-true"
        assert params["model/module/optimizer/lr"] == pytest.approx(2e-3)
        assert {"hp/val/CIDEr", "hp/val/BLEU-4", "hp/test/CIDEr", "hp/test/BLEU-4"} <= set(metric_names)

        # HPARAMS values: the best epoch's val/CIDEr (of the 2), the test score of that checkpoint.
        final = summary(job)["metrics"]
        curve = [e.value for e in events.Scalars("val/CIDEr")]
        assert len(curve) == 2
        assert events.Scalars("hp/val/CIDEr")[-1].value == pytest.approx(max(curve)) == pytest.approx(final["val/CIDEr"])
        assert events.Scalars("hp/test/CIDEr")[-1].value == pytest.approx(final["test/CIDEr"])
        assert math.isfinite(final["test/BLEU-4"])


def test_every_run_logs_the_same_sample_images_each_epoch(sweep):
    seen = []
    for run in tensorboard_runs(sweep).values():
        events = read_events(run)
        for k in range(4):  # callbacks.caption_samples.num_samples
            assert len(events.Images(f"val_samples/{k}")) == 2  # one per epoch, for every model
        tables = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("val/captions/text_summary")]
        ids = [re.findall(r"^\| (\d+) \|", t, flags=re.M) for t in tables]
        assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 4
        seen.append(ids[0])
    assert seen[0] == seen[1] == seen[2]  # so runs can be compared image by image


def test_compare_lists_the_runs_with_their_overrides_and_metrics(sweep, tmp_path):
    done = capgen("compare", str(sweep), "--markdown", str(tmp_path / "runs.md"), cwd=tmp_path)
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
    done = capgen("compare", "--paired", str(attn), str(lstm), "--resamples", "500", cwd=tmp_path)
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
    listed = capgen("compare", str(tmp_path), cwd=tmp_path).stdout.splitlines()
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
