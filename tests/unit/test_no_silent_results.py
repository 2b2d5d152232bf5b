"""No silent results: a setting, input or artifact that would change results without a word is
refused at start-up (or named in the output). One test per class, each trying several members;
none of them trains, starts a process or runs an epoch."""

import pytest
from hydra import compose, initialize_config_dir

from capgen.demo.app import check_settings as check_demo
from capgen.training.caption import check_settings as check_caption
from capgen.training.config import CONF_DIR, register
from capgen.training.evaluate import check_settings as check_eval
from capgen.training.prepare import prepare
from capgen.training.train import check_settings as check_train

register()


def compose_command(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


# ----- 1. numbers that are not numbers ------------------------------------------------------
TRAIN = ("debug=fast",)
NOT_NUMBERS = [
    # (command, its check, the override, the key the error must name)
    ("train", check_train, "model.module.lr=nan", "model.module.lr=nan"),
    ("train", check_train, "model.module.val_decode.length_penalty=nan", "model.module.val_decode.length_penalty=nan"),
    ("train", check_train, "model.module.label_smoothing=inf", "model.module.label_smoothing=inf"),
    ("train", check_train, "model.decoder.dropout=-inf", "model.decoder.dropout=-inf"),
    ("train", check_train, "callbacks.early_stopping.min_delta=nan", "callbacks.early_stopping.min_delta=nan"),
    ("train", check_train, "trainer.gradient_clip_val=inf", "trainer.gradient_clip_val=inf"),
    ("train", check_train, "data.batch_size=nan", "data.batch_size=nan"),  # a float where a whole number goes
    ("train", check_train, "experiment=shapes_scst model.module.scst_lr=inf", "model.module.scst_lr=inf"),
    ("eval", check_eval, "decode.length_penalty=nan", "decode.length_penalty=nan"),
    ("eval", check_eval, "decode.diversity_strength=nan", "decode.diversity_strength=nan"),
    ("eval", check_eval, "decode.temperature=inf", "decode.temperature=inf"),
    ("caption", check_caption, "decode.top_p=nan", "decode.top_p=nan"),
    ("caption", check_caption, "decode.temperature=-inf", "decode.temperature=-inf"),
    ("demo", check_demo, "decode.length_penalty=inf", "decode.length_penalty=inf"),
    ("prepare", None, "model.module.lr=nan", "model.module.lr=nan"),
]


@pytest.mark.parametrize("command, check, override, key", NOT_NUMBERS)
def test_nan_and_infinities_are_refused_at_start_up_naming_the_setting(tmp_path, command, check, override, key):
    given = {"train": [*TRAIN, f"paths.output_dir={tmp_path / 'run'}"], "eval": [], "demo": [],
             "caption": ["ckpt_path=x.ckpt", "images=x.jpg"], "prepare": [f"cache_dir={tmp_path / 'cache'}"]}[command]
    cfg = compose_command(command, *given, *override.split())
    with pytest.raises(ValueError) as err:
        if command == "prepare":
            prepare(cfg)
        else:
            check(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}: must be a finite number"), message
    assert "\n" not in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # nothing written


def test_the_default_is_offered_where_a_constructor_gives_one(tmp_path):
    cfg = compose_command("train", *TRAIN, f"paths.output_dir={tmp_path}", "model.module.lr=nan")
    with pytest.raises(ValueError, match=r"e\.g\. model\.module\.lr=0\.002 \(the default\)"):
        check_train(cfg)


def test_decode_settings_built_in_code_refuse_nan_too():
    from capgen.models.search.settings import DecodeSettings

    with pytest.raises(ValueError, match=r"decode\.length_penalty=nan: give a finite number"):
        DecodeSettings(method="beam", beam_size=3, length_penalty=float("nan"))


# ----- 2. settings that contradict each other or the run ------------------------------------
CONTRADICTIONS = [
    # the recipe with fewer epochs than its cross-entropy phase: it would finish as a cross-entropy run
    (("experiment=shapes_scst", "trainer.max_epochs=5"),
     r"^model\.module\.scst_from_epoch=8 with trainer\.max_epochs=5: self-critical training .* complete as a cross-entropy"),
    (("model.module.objective=scst", "model.module.scst_from_epoch=1"),  # debug=fast: 1 epoch
     r"^model\.module\.scst_from_epoch=1 with trainer\.max_epochs=1"),
    (("model.module.scheduled_sampling=0.25", "model.module.scheduled_sampling_start=3", "trainer.max_epochs=3"),
     r"^model\.module\.scheduled_sampling_start=3 with trainer\.max_epochs=3: scheduled sampling"),
    (("model.module.scheduler=step", "trainer.max_epochs=4"),  # lr_step_epochs=10: never cut
     r"^model\.module\.lr_step_epochs=10 with trainer\.max_epochs=4"),
    (("model.module.scheduler=plateau", "trainer.max_epochs=4", "+trainer.check_val_every_n_epoch=2"),
     r"^model\.module\.scheduler=plateau steps after every epoch on val/CIDEr, and trainer\.check_val_every_n_epoch=2"),
    (("model.module.scheduler=plateau", "+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=2"),
     r"^model\.module\.scheduler=plateau .*check_val_every_n_epoch=null"),
    (("model.module.objective=scst", "model.module.scst_max_len=2"),
     r"^model\.module\.scst_max_len=2: .* no 4-gram"),
    (("callbacks.early_stopping.patience=3", "callbacks.early_stopping.monitor=val/BLEU-5"),
     r"^callbacks\.early_stopping\.monitor='val/BLEU-5': no epoch of this run logs it"),
    (("callbacks.model_checkpoint.monitor=val/METEOR",),  # val_metrics: BLEU and CIDEr
     r"^callbacks\.model_checkpoint\.monitor='val/METEOR': no epoch of this run logs it"),
    (("trainer.limit_val_batches=0",),
     r"^monitor=val/CIDEr: trainer\.limit_val_batches=0: no epoch validates, .*monitor=train/loss monitor_mode=min"),
    (("trainer.max_epochs=3", "+trainer.check_val_every_n_epoch=4"),
     r"^monitor=val/CIDEr: trainer\.check_val_every_n_epoch=4 with trainer\.max_epochs=3: no epoch validates"),
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
    ("model.module.objective=scst", "model.module.scst_max_len=3"),
    ("trainer.limit_val_batches=0", "monitor=train/loss", "monitor_mode=min"),
    ("model.module.scheduler=plateau", "trainer.max_epochs=3"),
    ("model.module.scheduler=step", "model.module.lr_step_epochs=2", "trainer.max_epochs=3"),
    ("callbacks.early_stopping.monitor=val/BLEU-5",),  # early stopping off (patience null): never read
])
def test_settings_that_agree_pass(tmp_path, overrides):
    check_train(compose_command("train", *TRAIN, f"paths.output_dir={tmp_path / 'run'}", *overrides))


def test_the_scst_reward_scores_captions_and_references_narrower_than_its_4_grams():
    import torch

    from capgen.metrics.cider_reward import CiderDReward

    reward = CiderDReward({1: [[3, 4, 2]], 2: [[5, 2]]}, vocab_size=10)  # no reference holds a 4-gram
    # one word and its <end>: 2 tokens wide, once a tensor-size error
    scores = reward(torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 2]]))
    assert scores[1] > 0 and scores[0] > 0
    assert reward(torch.tensor([1]), torch.tensor([[3, 4, 2]]))[0].item() == pytest.approx(7.5)  # 1-3-grams match: 3/4 x 10
