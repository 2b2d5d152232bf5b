"""Self-critical training through capgen-train: from a cross-entropy run's weights (init_from)
and chained after cross-entropy in one run (scst_from_epoch), on tiny shapes data."""

import json
import math
from pathlib import Path

import pytest
import torch

from capgen.commands.train.fit import train

from helpers.runs import scalars

SCST = ["model.module.objective.name=scst", "model.module.objective.scst.samples=3", "logger=tensorboard"]


@pytest.fixture(scope="module")
def xe_run(tiny_lstm_run) -> Path:
    """The session's tiny cross-entropy run (lstm), finished: its folder records a best checkpoint."""
    return tiny_lstm_run


def test_scst_from_an_xe_run_starts_from_its_weights_and_logs_the_reward(xe_run, make_cfg):
    best = xe_run / json.loads((xe_run / "summary.json").read_text())["best_checkpoint"]
    saved = torch.load(best, weights_only=True)
    # A learning rate so small that the SCST steps leave the weights as they started: the
    # weights at the end are the XE run's, not a fresh initialisation's. data.max_len differs:
    # the vocabulary is the checkpoint's all the same.
    cfg = make_cfg("model=lstm", *SCST, f"init_from={xe_run}", "model.module.objective.scst.lr=1e-12", "data.max_len=7",
                   "model.module.test.metrics=[BLEU,CIDEr]", name="scst")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 3 and after["epoch"] == 0  # a new run: its own steps and epochs
    assert after["vocab"] == saved["vocab"]
    for key, value in saved["state_dict"].items():
        if key.startswith("net.") and not key.rsplit(".", 1)[1].startswith(("running_", "num_batches")):  # BN statistics move
            torch.testing.assert_close(after["state_dict"][key], value, rtol=0, atol=1e-8, msg=key)
    logged = scalars(run)
    for tag in ("train/reward", "train/baseline", "train/advantage", "train/sample_len", "train/loss"):
        assert [s for s, _ in logged[tag]] == [0, 1, 2], tag
    assert all(r >= 0 for _, r in logged["train/reward"])
    assert all(abs(a) < 1e-5 for _, a in logged["train/advantage"])  # the mean baseline: zero on average
    assert "train/xent" not in logged
    assert math.isfinite(metrics["train/reward"]) and math.isfinite(metrics["test/CIDEr"])

    # Resumed with its own settings (init_from among them, as resume= replays them), the run
    # continues from its own checkpoint: one more epoch, not a new start from the XE weights.
    train(make_cfg("model=lstm", *SCST, f"init_from={xe_run}", "model.module.objective.scst.lr=1e-12", "data.max_len=7",
                   "model.module.test.metrics=[BLEU,CIDEr]", "trainer.max_epochs=2", "test=false", f"resume={run}",
                   name="scst"))
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 1
    assert [s for s, _ in scalars(run)["train/reward"]] == [0, 1, 2, 3, 4, 5]


def test_init_from_refuses_another_network_and_a_resume_checkpoint(xe_run, make_cfg):
    with pytest.raises(ValueError, match=r"^init_from=.*another network than this run builds \(model\.decoder\._target_"):
        train(make_cfg("model=rnn", *SCST, f"init_from={xe_run}", name="other"))
    with pytest.raises(ValueError, match=r"^init_from=.* with ckpt_path=.*Give one of the two\.$"):
        train(make_cfg("model=lstm", f"init_from={xe_run}", f"ckpt_path={xe_run / 'checkpoints' / 'last.ckpt'}",
                       name="both"))
    with pytest.raises(ValueError, match=r"^init_from=.*a folder without summary\.json"):
        train(make_cfg("model=lstm", f"init_from={xe_run / 'checkpoints'}", name="folder"))


def test_xe_then_scst_in_one_run_switches_objective_and_learning_rate_at_the_epoch(make_cfg):
    cfg = make_cfg("experiment=shapes_scst", "model=lstm", "model.module.objective.scst.samples=3", "trainer.max_epochs=2",
                   "model.module.objective.scst.from_epoch=1", "test=false", "logger=tensorboard")
    train(cfg)
    logged = scalars(Path(cfg.paths.output_dir))
    assert [s for s, _ in logged["train/xent"]] == [0, 1, 2]  # epoch 0: cross-entropy
    assert [s for s, _ in logged["train/reward"]] == [3, 4, 5]  # epoch 1: self-critical
    for group in ("pg1", "pg2"):  # decoder, encoder: scst_lr (5e-5) from the first SCST step on
        lrs = dict(logged[f"lr-AdamW/{group}"])
        assert all(lrs[s] > 5e-5 for s in (0, 1)) and all(math.isclose(lrs[s], 5e-5, rel_tol=1e-6) for s in (3, 4, 5))


def test_bad_scst_settings_stop_the_run_at_start_up(make_cfg):
    with pytest.raises(ValueError, match=r"^model\.module\.objective\.scst\.samples=1 with model\.module\.objective\.scst\.baseline=mean"):
        train(make_cfg(*SCST, "model.module.objective.scst.samples=1"))
    with pytest.raises(ValueError, match=r"^model\.module\.objective\.name='sct'"):
        train(make_cfg("model.module.objective.name=sct"))
