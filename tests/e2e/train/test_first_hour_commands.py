"""A new user's first hour (issue 23), through capgen-train's own main() in this process: a
new run from another run's checkpoint, a refused resume, a misspelt setting."""

import json
from pathlib import Path

import pytest
import torch

from helpers.commands import main_in_process
from helpers.runs import SIZES


def capgen_train(monkeypatch, cwd: Path, *args: str) -> str | None:
    """capgen-train args... in this process; the message it exits with (None: it ended normally)."""
    said = main_in_process("train", *args, cwd=cwd, monkeypatch=monkeypatch)
    return None if said is None else str(said)


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_new_run_from_a_sweep_jobs_checkpoint_tests_its_own_best(tiny_run, tmp_path, monkeypatch):
    # A finished sweep job whose best epoch this short run cannot beat: without its own best,
    # the new run used to test <new run>/checkpoints/<the old best's name>, never written there.
    job = tmp_path / "multirun" / "1_model=attn,seed=7" / "checkpoints"
    job.mkdir(parents=True)
    saved = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    old_best = ""
    for key, state in saved["callbacks"].items():
        if key.startswith("BestCheckpoint"):
            old_best = Path(state["best_model_path"]).name
            state["best_model_score"] = torch.tensor(1e9)
            state["best_k_models"] = {p: torch.tensor(1e9) for p in state["best_k_models"]}
        if key.startswith("BestEpochMetrics"):
            state["best"] = {"val/CIDEr": 1e9}
    assert old_best
    torch.save(saved, job / "last.ckpt")

    new = tmp_path / "new"
    message = capgen_train(monkeypatch, tmp_path, f"ckpt_path={job / 'last.ckpt'}", "debug=fast", SIZES,
                           "trainer.max_epochs=2", "logger=[]", f"hydra.run.dir={new}")
    summary = json.loads((new / "summary.json").read_text())
    assert message is None, summary
    assert summary["status"] == "completed"
    best = new / summary["best_checkpoint"]
    assert best.parent == new / "checkpoints" and best.is_file() and best.name != old_best
    assert summary["metrics"]["val/CIDEr"] < 1e9  # the new run's best epoch, not the other run's
    assert "test/CIDEr" in summary["metrics"]


def test_a_refused_resume_ends_in_one_paragraph_and_changes_nothing(tiny_run, copy_run, tmp_path, monkeypatch):
    run = copy_run(tiny_run, "run")  # its .hydra/overrides.yaml as capgen-train leaves it
    before = files(run)
    message = capgen_train(monkeypatch, tmp_path, f"resume={run}", "model.decoder.hidden_dim=512")
    # What Python prints for a SystemExit with a message: that line alone, no traceback above it.
    assert message.startswith(f"capgen-train: ValueError: resume={run}: model.decoder.hidden_dim=512 would build "
                              "another network"), message
    where = message.rpartition("(traceback in ")[2]
    assert message.endswith(")") and Path(where[:-1]).read_text().startswith("Traceback")
    assert files(run) == before


def test_a_new_run_given_an_existing_runs_folder_is_refused_and_the_run_kept(tiny_run, copy_run, tmp_path, monkeypatch):
    run = copy_run(tiny_run, "run")  # forgot resume=: the new run would overwrite its last.ckpt, summary and .hydra/
    before = files(run)
    message = capgen_train(monkeypatch, tmp_path, "debug=fast", f"paths.output_dir={run}")
    assert message == (f"capgen-train: hydra.run.dir={run} already holds a run (.hydra/config.yaml, checkpoints/, "
                       "summary.json), and a new run there would overwrite its config, last checkpoint and summary and "
                       "mix its checkpoints with the new run's. Nothing was written. Continue that run with capgen-train "
                       f"resume={run} (trainer.max_epochs=... may be added), or give the new run another folder: "
                       "hydra.run.dir=<new folder>.")
    assert files(run) == before


TYPOS = {  # a misspelt key: (what it is given to, the close match)
    "model.decoder.hiden_dim": ("capgen.models.AttentionDecoder", "model.decoder.hidden_dim"),
    "model.module.objective.scst.samplez": ("capgen.lightning.objective.SCSTSettings", "model.module.objective.scst.samples"),
}


@pytest.mark.parametrize("typo", TYPOS)
@pytest.mark.parametrize("plus", ["+", ""])  # with +: past Hydra into a TypeError; without: Hydra said to add +
def test_a_misspelt_setting_is_refused_before_a_run_folder_is_written(tmp_path, monkeypatch, plus, typo):
    run = tmp_path / "typo"
    target, close = TYPOS[typo]
    message = capgen_train(monkeypatch, tmp_path, f"{plus}{typo}=3", "debug=fast", f"hydra.run.dir={run}")
    assert message.startswith(f"capgen-train: UnknownSetting: {typo}: {target} takes no setting "
                              f"'{typo.rpartition('.')[2]}'"), message
    assert f"Did you mean {close}?" in message
    assert not run.exists()  # so capgen-compare never lists it


@pytest.mark.parametrize(("models", "typo", "target"), [
    ("rnn,lstm", "+model.decoder.hiden_dim=3", "capgen.models.RNNDecoder"),  # wrong for every job
    ("attn,rnn", "model.decoder.attn_dim=8", "capgen.models.RNNDecoder"),  # right for the first job only
])
def test_a_sweep_with_a_setting_one_of_its_jobs_refuses_writes_no_job_folder(tmp_path, monkeypatch, models, typo, target):
    sweep = tmp_path / "sweep"
    message = capgen_train(monkeypatch, tmp_path, "-m", f"model={models}", typo, "debug=fast", f"hydra.sweep.dir={sweep}")
    key = typo.lstrip("+").split("=")[0]
    assert message.startswith(f"capgen-train: UnknownSetting: {key}: {target} takes no setting"), message
    assert not sweep.exists()  # refused before the first job made its folder


def test_a_checkpoint_knows_its_training_data_and_caption_warns_on_a_photograph(ckpt, tmp_path, caplog):
    from hydra import compose, initialize_config_dir

    from capgen.commands.caption import caption_images
    from capgen.config import CONF_DIR
    from capgen.runs.checkpoint import read_checkpoint

    from helpers.fixtures_real import write_jpeg

    saved = torch.load(ckpt, weights_only=True)
    assert saved["training_data"]["data"] == "shapes" and saved["training_data"]["source"].endswith("ShapesSource")
    # The resolved data config too (${seed} resolved), and no setting of shapes decides its splits.
    assert saved["training_data"]["config"]["source"]["sizes"]["train"] > 0
    assert isinstance(saved["training_data"]["config"]["seed"], int) and saved["training_data"]["splits_by"] == {}
    trained = read_checkpoint(ckpt).trained
    assert trained.describe() == "shapes, 1 epoch" and trained.steps == 3

    photo = write_jpeg(tmp_path / "photos" / "holiday.jpg", seed=1)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("caption", overrides=[f"ckpt_path={ckpt}", f"images={photo.parent}", "figures=false",
                                            f"paths.output_dir={tmp_path / 'out'}"])
    caplog.set_level("WARNING", logger="capgen.commands.caption")
    caption_images(cfg)
    warned = [r.getMessage() for r in caplog.records if "synthetic shapes data" in r.getMessage()]
    assert len(warned) == 1 and "shapes, 1 epoch" in warned[0] and "data=coco2014" in warned[0]


def test_the_demo_column_shows_data_and_epochs_and_notes_an_uploaded_photograph(ckpt, tmp_path):
    pytest.importorskip("gradio", reason="the demo extra: pip install -e '.[demo]'")
    from hydra import compose, initialize_config_dir

    from capgen.commands.demo.page import _caption_all, caption_html
    from capgen.commands.demo.served import load_served_models
    from capgen.config import CONF_DIR

    from helpers.fixtures_real import write_jpeg

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"ckpt_path='{ckpt}'", f"paths.output_dir={tmp_path / 'out'}"])
    (served,) = load_served_models(cfg)
    assert served.trained.describe() == "shapes, 1 epoch"
    photo = write_jpeg(tmp_path / "holiday.jpg", seed=2)
    choices = ("greedy", 3, 1, 1.0, 0.9, 0)
    (uploaded,) = _caption_all([served], {"path": str(photo), "orig_name": "holiday.jpg"}, choices,
                               tmp_path / "out", 160, 100)
    assert "synthetic shapes data" in caption_html(uploaded.row)
    (example,) = _caption_all([served], {"path": str(photo), "orig_name": "shapes_test_0.png"}, choices,
                              tmp_path / "out", 160, 100)
    assert "note" not in example.row  # the page's own shapes scenes need no warning


def test_a_new_run_from_a_finished_checkpoint_that_trains_nothing_says_so(ckpt, make_cfg):
    from capgen.commands.train.fit import train

    cfg = make_cfg(f"ckpt_path={ckpt}", "logger=[]")  # debug=fast: 1 epoch, as many as the checkpoint has
    with pytest.raises(ValueError, match=r"has trained 1 epoch\(s\) \(3 steps\), as many as trainer.max_epochs=1 allow, "
                                         r"so this run trained nothing\. Give a larger trainer.max_epochs"):
        train(cfg)
