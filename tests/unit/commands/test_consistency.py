"""Settings that contradict each other or the run stop capgen-train at start-up, before anything is
written; settings that agree pass."""

import pytest

from capgen.commands.train.fit import check_train_config as check_train

from helpers.runs import compose_command

TRAIN = ("debug=fast",)

CONTRADICTIONS = [
    # the recipe with fewer epochs than its cross-entropy phase: it would finish as a cross-entropy run
    (("experiment=shapes_scst", "trainer.max_epochs=5"),
     r"^model\.module\.objective\.scst\.from_epoch=8 with trainer\.max_epochs=5: self-critical training .* complete as a cross-entropy"),
    (("model.module.objective.name=scst", "model.module.objective.scst.from_epoch=1"),  # debug=fast: 1 epoch
     r"^model\.module\.objective\.scst\.from_epoch=1 with trainer\.max_epochs=1"),
    (("model.module.objective.scheduled_sampling.probability=0.25", "model.module.objective.scheduled_sampling.start=3", "trainer.max_epochs=3"),
     r"^model\.module\.objective\.scheduled_sampling\.start=3 with trainer\.max_epochs=3: scheduled sampling"),
    (("model.module.scheduler.name=step", "trainer.max_epochs=4"),  # lr_step_epochs=10: never cut
     r"^model\.module\.scheduler\.step_epochs=10 with trainer\.max_epochs=4"),
    (("model.module.scheduler.name=plateau", "trainer.max_epochs=4", "+trainer.check_val_every_n_epoch=2"),
     r"^model\.module\.scheduler\.name=plateau steps after every epoch on val/CIDEr, and trainer\.check_val_every_n_epoch=2"),
    (("model.module.scheduler.name=plateau", "+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=2"),
     r"^model\.module\.scheduler\.name=plateau .*check_val_every_n_epoch=null"),
    (("model.module.objective.name=scst", "model.module.objective.scst.max_len=2"),
     r"^model\.module\.objective\.scst\.max_len=2: .* no 4-gram"),
    (("callbacks.early_stopping.patience=3", "callbacks.early_stopping.monitor=val/BLEU-5"),
     r"^callbacks\.early_stopping\.monitor='val/BLEU-5': no epoch of this run logs it"),
    (("callbacks.model_checkpoint.monitor=val/METEOR",),  # val_metrics: BLEU and CIDEr
     r"^callbacks\.model_checkpoint\.monitor='val/METEOR': no epoch of this run logs it"),
    (("trainer.limit_val_batches=0",),
     r"^monitor=val/CIDEr: trainer\.limit_val_batches=0: no epoch validates, .*monitor=train/loss monitor_mode=min"),
    (("trainer.max_epochs=3", "+trainer.check_val_every_n_epoch=4"),
     r"^monitor=val/CIDEr: trainer\.check_val_every_n_epoch=4 with trainer\.max_epochs=3: no epoch validates"),
    (("monitor=val/loss",),  # monitor_mode stays max: the best checkpoint would be the highest loss
     r"^monitor=val/loss with monitor_mode=max: a loss is better lower.*Give monitor_mode=min"),
    (("monitor=val/BLEU-4", "monitor_mode=min"), r"^monitor=val/BLEU-4 with monitor_mode=min: a score is better higher"),
    (("callbacks.early_stopping.patience=2", "callbacks.early_stopping.mode=min"),
     r"^callbacks\.early_stopping\.monitor=val/CIDEr with callbacks\.early_stopping\.mode=min"),
]


@pytest.mark.parametrize("overrides, message", CONTRADICTIONS)
def test_settings_that_contradict_each_other_or_the_run_stop_it_at_start_up(tmp_path, overrides, message):
    cfg = compose_command("train", *TRAIN, f"paths.output_dir={tmp_path / 'run'}", *overrides)
    with pytest.raises(ValueError, match=message) as err:
        check_train(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ("experiment=shapes_scst", "trainer.max_epochs=10"),  # 8 epochs of cross-entropy, then 2 of SCST
    ("experiment=shapes_scst", "+trainer.fast_dev_run=1"),  # a smoke test: its result claims nothing
    ("model.module.objective.name=scst", "model.module.objective.scst.max_len=3"),
    ("trainer.limit_val_batches=0", "monitor=train/loss", "monitor_mode=min"),
    ("model.module.scheduler.name=plateau", "trainer.max_epochs=3"),
    ("model.module.scheduler.name=step", "model.module.scheduler.step_epochs=2", "trainer.max_epochs=3"),
    ("callbacks.early_stopping.monitor=val/BLEU-5",),  # early stopping off (patience null): never read
    ("monitor=val/loss", "monitor_mode=min"),
])
def test_settings_that_agree_pass(tmp_path, overrides):
    check_train(compose_command("train", *TRAIN, f"paths.output_dir={tmp_path / 'run'}", *overrides))
