"""The loggers (conf/logger/, capgen/lightning/loggers.py) on debug=fast runs: what each writes,
several at once and none, a resume that continues the MLflow run and the CSV file, a sweep,
and the message when a logger's optional package is missing."""

import csv
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from capgen.commands.train.fit import train
from capgen.config.plugins import require_logger_packages
from capgen.lightning import samples

from helpers import procs, wandb_log
from helpers.runs import compose_train
from helpers.workflow import capgen, job_dirs, read_events, small, summary

# A short run: the LSTM, scored by BLEU and CIDEr only (METEOR's Java process is the slow part of a test).
QUICK = ["model=lstm", "model.module.test.metrics=[BLEU,CIDEr]"]
CRASH_AT_3 = ["+callbacks.crash._target_=helpers.crash_once.CrashOnce", "+callbacks.crash.at_step=3"]


def csv_column(run: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of every row of the run's one CSV log that has `key`."""
    (path,) = (run / "csv").glob("*/metrics.csv")
    with path.open(newline="") as file:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(file) if row.get(key)]


def mlflow_run(run: Path):
    """The one MLflow run in the run folder's file store, and a client for it."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in, as capgen's logger sets it

    client = MlflowClient(f"file:{run / 'mlruns'}")
    (found,) = client.search_runs([client.get_experiment_by_name("capgen").experiment_id])
    return client, found


def mlflow_column(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(found) -> Path:
    return Path(found.info.artifact_uri.removeprefix("file://").removeprefix("file:"))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One 2-epoch run with TensorBoard, CSV and MLflow at once and the sample figures, each
    figure counted where it is drawn: (run folder, its config, its metrics, figures drawn)."""
    drawn = []
    draw = samples.pixels
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(samples, "pixels", lambda fig: drawn.append(fig) or draw(fig))
        cfg = compose_train(tmp_path_factory.mktemp("loggers"), "logger=[tensorboard,csv,mlflow]", *QUICK,
                            "trainer.max_epochs=2", rich=True)
        metrics = train(cfg)
    return Path(cfg.paths.output_dir), cfg, metrics, drawn


def test_csv_logger_has_every_metric_the_final_ones_and_the_settings(logged):
    run, cfg, metrics, _ = logged
    assert [s for s, _ in csv_column(run, "train/loss")] == list(range(6))  # 2 epochs x 3 steps, each once
    val = csv_column(run, "val/CIDEr")
    assert len(val) == 2 and len(csv_column(run, "test/CIDEr")) == 1
    assert csv_column(run, "hp/val/CIDEr")[-1][1] == pytest.approx(max(v for _, v in val))  # the best epoch's
    assert csv_column(run, "hp/test/CIDEr")[-1][1] == pytest.approx(metrics["test/CIDEr"])
    hparams = yaml.safe_load((run / "csv" / "default" / "hparams.yaml").read_text())
    assert hparams["model"]["decoder"]["hidden_dim"] == cfg.model.decoder.hidden_dim and hparams["seed"] == 42


def test_mlflow_file_store_has_the_run_its_params_metrics_and_sample_images(logged):
    run, cfg, metrics, _ = logged
    client, found = mlflow_run(run)
    assert (found.info.status, found.info.run_name) == ("FINISHED", "default")
    assert json.loads((run / "logger_runs.json").read_text())["mlflow"]["run_id"] == found.info.run_id
    params = found.data.params
    assert params["model.decoder.hidden_dim"] == str(cfg.model.decoder.hidden_dim) and params["seed"] == "42"
    assert params["optimizer.lr"] == str(cfg.model.module.optimizer.lr)  # the module's own settings, logged by Lightning at the start
    assert [s for s, _ in mlflow_column(client, found.info.run_id, "train/loss")] == list(range(6))  # 2 epochs x 3 steps
    val = [v for _, v in mlflow_column(client, found.info.run_id, "val/CIDEr")]
    assert len(val) == 2 and found.data.metrics["hp/val/CIDEr"] == pytest.approx(max(val))  # the best epoch's
    assert found.data.metrics["hp/test/CIDEr"] == pytest.approx(metrics["test/CIDEr"])
    store = artifacts(found)
    samples_0 = sorted(store.glob("val_samples/step*/0.png"))
    assert len(samples_0) == 2 and len(list(store.glob("test_samples/step*/*.png"))) == 4  # one per validation; the test's
    assert Image.open(samples_0[0]).size[0] > 100
    tables = sorted(store.glob("val_captions/step*.md"))
    assert len(tables) == 2 and tables[0].read_text().startswith("| image | generated | references |")


def test_wandb_offline_writes_its_run_folder_with_the_metrics(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default: offline, no network or account needed
    cfg = make_cfg("logger=wandb", *QUICK, rich=True)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    (folder,) = (run / "wandb").glob("offline-run-*")
    run_id = json.loads((run / "logger_runs.json").read_text())["wandb"]["id"]
    log = folder / f"run-{run_id}.wandb"  # what `wandb sync` uploads
    logged = wandb_log.history(log)
    assert len(logged["train/loss"]) == 3 and len(logged["val/CIDEr"]) == 1  # 1 epoch x 3 steps
    assert logged["hp/test/CIDEr"] == [pytest.approx(metrics["test/CIDEr"])]
    assert logged["val/CIDEr"] == [pytest.approx(metrics["val/CIDEr"])]
    settings = wandb_log.config(log)
    assert settings["model"]["decoder"]["hidden_dim"] == cfg.model.decoder.hidden_dim and settings["seed"] == 42
    assert len(list((folder / "files" / "media" / "images" / "val_samples").glob("*.png"))) == 4  # the sample figures


def test_several_loggers_log_the_same_points_and_each_figure_is_drawn_once(logged):
    run, _, _, drawn = logged
    events = read_events(run / "tb" / "default")
    client, found = mlflow_run(run)
    for key in ("train/loss", "val/CIDEr", "test/CIDEr"):
        tb = [(e.step, e.value) for e in events.Scalars(key)]
        for other in (csv_column(run, key), mlflow_column(client, found.info.run_id, key)):
            assert [s for s, _ in other] == [s for s, _ in tb], key
            assert [v for _, v in other] == pytest.approx([v for _, v in tb], rel=1e-6), key
    # The result: hp/val/CIDEr for CSV and MLflow, TensorBoard's HPARAMS session (<run>/best) under val/CIDEr.
    session = [e.value for e in read_events(run / "tb" / "default" / "best").Scalars("val/CIDEr")]
    for other in (csv_column(run, "hp/val/CIDEr"), mlflow_column(client, found.info.run_id, "hp/val/CIDEr")):
        assert [v for _, v in other] == pytest.approx(session, rel=1e-6)
    tb_images = sum(len(events.Images(tag)) for tag in events.Tags()["images"])
    mlflow_images = list(artifacts(found).rglob("*.png"))
    assert len(drawn) == tb_images == len(mlflow_images) > 0  # val and test samples, each drawn once for both


def test_no_logger_trains_and_writes_no_logs(tiny_lstm_run):
    """The session's LSTM run has logger=[] (the cheap test config): Lightning's learning-rate
    monitor, which needs a logger, was left out, and no logger wrote anything."""
    assert json.loads((tiny_lstm_run / "summary.json").read_text())["status"] == "completed"
    assert not any((tiny_lstm_run / name).exists() for name in ("tb", "csv", "mlruns", "wandb", "logger_runs.json"))


def test_a_resume_continues_the_mlflow_run_and_the_csv_file(make_cfg, tmp_path):
    base = ["logger=[csv,mlflow]", *QUICK, "test=false", *CRASH_AT_3, f"+callbacks.crash.marker={tmp_path / 'crashed'}"]
    cfg = make_cfg(*base, "trainer.max_epochs=2", name="run")
    with pytest.raises(RuntimeError, match="simulated crash at step 3"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    client, crashed = mlflow_run(run)
    assert crashed.info.status == "FAILED"
    # Resumed with a changed module setting, which Lightning logs as an MLflow parameter.
    train(make_cfg(*base, "trainer.max_epochs=2", "model.module.test.decode.beam_size=2", f"resume={run}", name="run"))
    client, resumed = mlflow_run(run)  # still one MLflow run
    assert (resumed.info.run_id, resumed.info.status) == (crashed.info.run_id, "FINISHED")
    assert [s for s, _ in mlflow_column(client, resumed.info.run_id, "train/loss")] == list(range(6))
    assert len(mlflow_column(client, resumed.info.run_id, "val/CIDEr")) == 2
    # MLflow keeps a parameter's first value; the resumed one is a tag.
    assert resumed.data.params["test.decode.beam_size"] == str(cfg.model.module.test.decode.beam_size)
    assert resumed.data.tags["resumed/test.decode.beam_size"] == "2"
    assert [s for s, _ in csv_column(run, "train/loss")] == list(range(6))  # the rows before the crash kept
    assert len(csv_column(run, "val/CIDEr")) == 2


@pytest.mark.slow
def test_a_sweep_logs_each_job_to_its_own_runs(tmp_path, monkeypatch):
    """`-m` with several loggers: every job (one process, one after another) has its own MLflow and
    W&B runs, not the first job's still open."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    done = capgen("train", "-m", "model=rnn,lstm", *small("logger=[csv,tensorboard,mlflow,wandb]", "model.module.test.metrics=[BLEU,CIDEr]"),
                  f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_dirs(tmp_path)
    assert [job.name.rsplit(",", 1)[-1] for job in jobs] == ["model=rnn", "model=lstm"]
    assert not any("logger" in job.name for job in jobs)  # where a run logs is not part of its name
    wandb_ids = set()
    for job, model in zip(jobs, ("rnn", "lstm")):
        final = summary(job)["metrics"]
        client, found = mlflow_run(job)
        assert found.info.status == "FINISHED" and found.data.params["group.model"] == model
        assert found.data.metrics["hp/test/CIDEr"] == pytest.approx(final["test/CIDEr"])
        assert csv_column(job, "hp/test/CIDEr")[-1][1] == pytest.approx(final["test/CIDEr"])
        assert read_events(job / "tb" / job.name.split("_", 1)[1] / "best").Scalars("test/CIDEr")
        (log,) = (job / "wandb").glob("offline-run-*/run-*.wandb")
        assert wandb_log.history(log)["hp/test/CIDEr"] == [pytest.approx(final["test/CIDEr"])]  # this job's alone
        wandb_ids.add(json.loads((job / "logger_runs.json").read_text())["wandb"]["id"])
    assert len(wandb_ids) == 2


def test_a_missing_logger_package_is_one_paragraph_with_the_pip_command_before_anything_is_written(tmp_path):
    # A None in sys.modules blocks the import, as if the package were not installed.
    code = "import sys; sys.modules['mlflow'] = None; from capgen.cli.train import main; main()"
    run = tmp_path / "run"
    done = procs.run([sys.executable, "-c", code, "logger=[tensorboard,mlflow]", f"hydra.run.dir={run}"],
                     cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    message = done.stderr.strip()
    assert message.startswith("capgen-train: logger=[tensorboard,mlflow]: the mlflow logger needs the mlflow package"), message
    assert 'pip install -e ".[mlflow]"' in message and "\n" not in message
    assert not run.exists()


@pytest.mark.parametrize("override", ["logger=wandb", "logger=[csv,wandb]", "logger=csv,wandb", "+logger=wandb"])
def test_every_way_of_naming_a_logger_is_checked_for_its_package(monkeypatch, override):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SystemExit, match=rf'^{re.escape(override)}: the wandb logger .* pip install -e "\.\[wandb\]"'):
        require_logger_packages(["-m", override, "model=lstm"])
    require_logger_packages(["logger=[csv,tensorboard]"])  # these need nothing


def test_train_refuses_a_logger_whose_package_is_missing_before_anything_is_built(make_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    cfg = make_cfg("logger=[csv,mlflow]")
    with pytest.raises(ModuleNotFoundError, match=r'^logger=mlflow: .* pip install -e "\.\[mlflow\]"'):
        train(cfg)
    assert list(Path(cfg.paths.output_dir).iterdir()) == []


def test_logger_null_says_how_to_write_no_logger():
    with pytest.raises(SystemExit, match=r"^logger=null: .* write logger=\[\] \(or ~logger\)\.$"):
        require_logger_packages(["logger=null"])
