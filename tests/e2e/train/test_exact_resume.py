"""Training N epochs in one go equals training, crashing and resuming: same weights, same logs.

The LSTM model has dropout (random masks each step) and a warm-up plus cosine learning-rate
schedule: a resume that lost the generators, the schedule's step or the data order would
show up as different weights. The crash is an exception raised at
the start of a training step, after the checkpoint it resumes from was written, so the
interrupted run itself logged nothing past that checkpoint's step (the soak in
test_soak.py covers runs killed at any moment).
"""

from pathlib import Path

import lightning as L
import pytest

from capgen.commands.train.fit import train
from capgen.lightning.tensorboard import LAYOUT_TAG

from helpers.runs import assert_same_training_state, checkpoint, compose_train, scalars, tb_events, tb_run, tb_steps

# 2 epochs x 3 steps (debug=fast); TensorBoard on: the curves are compared. Each test names
# its decoder (model=...) among its extra overrides.
ONE_RUN = ["trainer.max_epochs=2", "test=false", "logger=tensorboard"]
SAMPLES = "callbacks.caption_samples.num_samples=1"  # the caption figure of one image per validation


class Crash(L.Callback):
    """Raises when the step `at_step` is about to start, as a crash would."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError(f"simulated crash at step {self.at_step}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of ONE_RUN + extra overrides (each trained once per module)."""
    runs: dict[tuple[str, ...], Path] = {}

    def run_of(*extra: str) -> Path:
        if extra not in runs:
            run = tmp_path_factory.mktemp("uninterrupted")
            train(compose_train(run, *ONE_RUN, *extra))  # as make_cfg composes the split run
            runs[extra] = run
        return runs[extra]

    return run_of


def crash_then_resume(make_cfg, monkeypatch, at_step: int, *extra: str, crash_again_at: int | None = None) -> Path:
    """Run ONE_RUN in folder "split", crash it at `at_step` (and the resumed run at
    `crash_again_at`), then resume=<that folder> to the end."""
    cfg = make_cfg(*ONE_RUN, *extra, name="split")
    run = Path(cfg.paths.output_dir)
    # The crash callback goes in through the trainer, as an extra callback would.
    original = L.Trainer.__init__

    def crashing_at(step: int):
        def with_crash(self, *args, callbacks=(), **kw):
            original(self, *args, callbacks=[*callbacks, Crash(step)], **kw)
        return with_crash

    monkeypatch.setattr(L.Trainer, "__init__", crashing_at(at_step))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    if crash_again_at is not None:
        monkeypatch.setattr(L.Trainer, "__init__", crashing_at(crash_again_at))
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(make_cfg(*ONE_RUN, *extra, f"resume={run}", name="split"))
    monkeypatch.setattr(L.Trainer, "__init__", original)
    train(make_cfg(*ONE_RUN, *extra, f"resume={run}", name="split"))
    return run


@pytest.mark.parametrize(
    "at_step, extra",
    [
        (3, ("model=lstm",)),  # epoch 1 about to start: resumes from the end-of-epoch-0 last.ckpt
        (5, ("model=lstm", "callbacks.last_checkpoint.every_n_train_steps=2")),  # mid-epoch 1: last.ckpt of step 4
        # last.ckpt of step 3, written before epoch 0's validation: that validation must not
        # move the random stream the resumed run continues from
        (3, ("model=lstm", "callbacks.last_checkpoint.every_n_train_steps=3")),
    ],
    ids=["epoch-end-checkpoint", "mid-epoch-checkpoint", "step-checkpoint-before-validation"],
)
def test_crash_and_resume_equals_one_uninterrupted_run(uninterrupted, make_cfg, monkeypatch, at_step, extra):
    # Same checkpoint settings on both sides: last.ckpt written at an epoch's last step (the
    # mid-epoch case) precedes that epoch's validation, so it holds an older best score.
    extra = (*extra, SAMPLES)
    full = uninterrupted(*extra)
    split = crash_then_resume(make_cfg, monkeypatch, at_step, *extra)

    a, b = checkpoint(full), checkpoint(split)
    assert_same_training_state(a, b)
    # The best-checkpoint tracker continued too: same best score, same file kept.
    best = next(k for k in a["callbacks"] if k.startswith("BestCheckpoint") and "val/CIDEr" in k)
    assert a["callbacks"][best]["best_model_score"] == b["callbacks"][best]["best_model_score"]
    assert Path(a["callbacks"][best]["best_model_path"]).name == Path(b["callbacks"][best]["best_model_path"]).name
    assert sorted(p.name for p in (split / "checkpoints").glob("*.ckpt")) == sorted(
        p.name for p in (full / "checkpoints").glob("*.ckpt"))

    # One folder, one curve per metric, point for point the uninterrupted run's (same float32 values).
    logged_full, logged_split = scalars(full), scalars(split)
    assert logged_split.keys() == logged_full.keys()
    for tag in logged_full:
        assert logged_split[tag] == logged_full[tag], tag
    assert [s for s, _ in logged_full["train/loss"]] == list(range(6))
    # Every validation's caption figure, read as TensorBoard's Python loader reads them: it drops
    # what was logged at or after the step a resume starts from, which must not take the figure
    # of the validation the checkpoint was written after (the resumed run does not log it again).
    full_events, split_events = tb_events(full), tb_events(split)
    figures = {tag: [e.step for e in full_events.Images(tag)] for tag in full_events.Tags()["images"]}
    assert {tag: [e.step for e in split_events.Images(tag)] for tag in split_events.Tags()["images"]} == figures
    assert figures == {"val_samples/0": [s for s, _ in logged_full["val/CIDEr"]]}  # one per validation, at its scores' step
    # Every tag step for step as `tensorboard --load_fast=false` reads them: the points the
    # interrupted run logged after its checkpoint dropped there too, not shown twice.
    assert tb_steps(split) == tb_steps(full)
    # The custom-scalars layout once, at step 0: the resumed process found it and wrote none.
    assert [e.step for e in split_events.Tensors(LAYOUT_TAG)] == [0]
    # The same event files as the uninterrupted run (training's, then the final hparams entry's)
    # plus the crashed run's own.
    files = [len(list(tb_run(r).glob("events.out.tfevents.*"))) for r in (full, split)]
    assert files[1] == files[0] + 1, files


def test_two_resumes_within_one_epoch_equal_one_uninterrupted_run(uninterrupted, make_cfg, monkeypatch):
    """Crash at step 4 and at step 5 of epoch 1 (steps 3-5), resuming each time from a step
    checkpoint: the second resume must know where the epoch stands, not how far the first
    resumed process got in it (it repeated a batch before). With two captions per image: the
    epoch's position counts images, and their references go on where they stopped."""
    extra = ("model=lstm", "callbacks.last_checkpoint.every_n_train_steps=1", "data.train_captions_per_image=2")
    full = uninterrupted(*extra)
    split = crash_then_resume(make_cfg, monkeypatch, 4, *extra, crash_again_at=5)
    assert_same_training_state(checkpoint(full), checkpoint(split))
    logged_full, logged_split = scalars(full), scalars(split)
    for tag in ("train/loss", "val/loss", "val/CIDEr"):
        assert logged_split[tag] == logged_full[tag], tag


def test_xe_then_scst_crash_and_resume_equals_one_uninterrupted_run(uninterrupted, make_cfg, monkeypatch):
    """Self-critical training samples its captions from torch's global generator: a run
    resumed in its SCST epoch, from a step checkpoint written mid-epoch, draws the captions
    (and so the rewards and the updates) of the uninterrupted run. With the Transformer
    decoder (dropout on, its key/value cache in the sampler)."""
    extra = ("model=transformer", "model.decoder.d_model=32", "model.decoder.ffn_dim=64", "model.module.objective.name=scst", "model.module.objective.scst.from_epoch=1", "model.module.objective.scst.samples=3",
             "callbacks.last_checkpoint.every_n_train_steps=2")
    full = uninterrupted(*extra)
    split = crash_then_resume(make_cfg, monkeypatch, 5, *extra)  # resumes from the checkpoint of step 4
    assert_same_training_state(checkpoint(full), checkpoint(split))
    logged_full, logged_split = scalars(full), scalars(split)
    assert [s for s, _ in logged_full["train/reward"]] == [3, 4, 5]
    for tag in ("train/loss", "train/reward", "train/sample_len", "val/CIDEr"):
        assert logged_split[tag] == logged_full[tag], tag
