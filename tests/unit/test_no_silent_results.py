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
