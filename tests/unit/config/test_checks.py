"""Settings checked at start-up: types against the constructors' annotations, the ranges the
constructors check, and the run-level settings (a run that trains on nothing, a monitor no
epoch logs); each error is one paragraph naming the key, the value and the fix, and comes
before anything is written into the run folder."""

import re
from typing import Literal

import pytest
import torch
from omegaconf import OmegaConf

from capgen.commands.caption import check_caption_config as check_caption
from capgen.commands.demo.app import check_demo_config as check_demo
from capgen.commands.eval.evaluate import check_eval_config as check_eval
from capgen.commands.prepare import prepare
from capgen.commands.train.fit import check_train_config as check_train
from capgen.commands.train.fit import train
from capgen.config.argv import command_overrides
from capgen.config.checks import check_types

from helpers.runs import compose_command
from helpers.runs import compose_train as compose_shared


class Target:
    def __init__(self, n: int = 3, x: float = 0.5, flag: bool = False, name: str = "a",
                 mode: Literal["up", "down"] = "up", maybe: int | None = None, words: tuple[str, ...] = ("a",)):
        pass


def node(**values):
    return OmegaConf.create({"_target_": f"{__name__}.Target", **values})


@pytest.mark.parametrize("values", [
    {}, {"n": 0}, {"x": 1}, {"x": 2.5}, {"flag": True}, {"name": "b"}, {"mode": "down"}, {"maybe": None},
    {"maybe": 4}, {"words": ["a", "b"]},
])
def test_values_that_fit_their_annotation_pass(values):
    check_types(node(**values), "group")


@pytest.mark.parametrize("values, message", [
    ({"n": "abc"}, "group.n='abc': must be a whole number, e.g. group.n=3 (the default)."),
    ({"n": 2.5}, "group.n=2.5: must be a whole number, e.g. group.n=3 (the default)."),
    ({"n": True}, "group.n=True: must be a whole number"),
    ({"x": "fast"}, "group.x='fast': must be a number, e.g. group.x=0.5 (the default)."),
    ({"flag": "yes"}, "group.flag='yes': must be true or false, e.g. group.flag=false (the default)."),
    ({"name": 3}, "group.name=3: must be a string"),
    ({"mode": "left"}, "group.mode='left': must be one of up, down, e.g. group.mode=up (the default)."),
    ({"maybe": "x"}, "group.maybe='x': must be a whole number or null."),
    ({"words": "a"}, "group.words='a': must be a list of a string values"),
    ({"words": ["a", 1]}, "group.words=['a', 1]: must be a list of a string values"),
])
def test_values_that_do_not_fit_name_the_key_the_value_and_an_example(values, message):
    with pytest.raises(ValueError) as err:
        check_types(node(**values), "group")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_nested_targets_are_checked_under_their_own_key():
    nested = OmegaConf.create({"_target_": f"{__name__}.Target", "inner": {"_target_": f"{__name__}.Target", "n": "x"}})
    with pytest.raises(ValueError, match=r"^outer\.inner\.n='x'"):
        check_types(nested, "outer")


def test_a_settings_group_is_checked_field_by_field_under_its_own_key():
    """A constructor argument annotated with a settings dataclass (CaptioningModule's objective,
    its scst inside) has its node's keys and values checked against the dataclass's fields."""
    from capgen.config.checks import UnknownSetting, check_keys

    module = {"_target_": "capgen.lightning.module.CaptioningModule"}
    with pytest.raises(UnknownSetting, match=r"^model\.module\.objective\.scst\.samplez: .*SCSTSettings takes no "
                                             r"setting 'samplez'.* Did you mean model\.module\.objective\.scst\.samples\?"):
        check_keys(OmegaConf.create({**module, "objective": {"scst": {"samplez": 3}}}), "model.module")
    with pytest.raises(ValueError, match=r"^model\.module\.objective\.scst\.samples='x': must be a whole number, e\.g\. "
                                         r"model\.module\.objective\.scst\.samples=5 \(the default\)\.$"):
        check_types(OmegaConf.create({**module, "objective": {"scst": {"samples": "x"}}}), "model.module")
    # a stage's example is that stage's own default: the test decodes with a beam of 3
    with pytest.raises(ValueError, match=r"^model\.module\.test\.decode\.beam_size=2\.5: .* e\.g\. "
                                         r"model\.module\.test\.decode\.beam_size=3 \(the default\)"):
        check_types(OmegaConf.create({**module, "test": {"decode": {"beam_size": 2.5}}}), "model.module")
    # a setting given where its group would hold it: the group's key is offered
    with pytest.raises(UnknownSetting, match=r"^model\.module\.lr: .* Did you mean model\.module\.optimizer\.lr\?"):
        check_keys(OmegaConf.create({**module, "lr": 1e-3}), "model.module")
    check_keys(OmegaConf.create({**module, "objective": {"scst": {"samples": 3}}, "val": {"metrics": None}}), "model.module")


def compose_train(tmp_path, *overrides):
    return compose_shared(tmp_path / "run", *overrides)


@pytest.mark.parametrize("override, message", [
    ("model.module.optimizer.lr=abc", "model.module.optimizer.lr='abc': must be a number"),
    ("model.module.optimizer.lr=-1", "model.module.optimizer.lr=-1: must be a positive number"),
    ("model.module.optimizer.lr=nan", "model.module.optimizer.lr=nan: must be a finite number"),
    ("model.module.optimizer.encoder_lr=0", "model.module.optimizer.encoder_lr=0: must be a positive number, or null"),
    ("model.module.optimizer.weight_decay=-0.1", "model.module.optimizer.weight_decay=-0.1: must be at least 0"),
    ("model.module.scheduler.warmup_steps=-5", "model.module.scheduler.warmup_steps=-5: must be at least 0"),
    ("model.module.objective.alpha_c=-1", "model.module.objective.alpha_c=-1: must be at least 0"),
    ("model.module.test.decode.beam_size=2.5", "model.module.test.decode.beam_size=2.5: must be a whole number"),
    ("model.module.scheduler.name=linear", "model.module.scheduler.name='linear': must be one of none, cosine"),
    ("model.module.val.metrics=[FOO]", "model.module.val.metrics=['FOO']: unknown metric(s) ['FOO']"),
    ("data.batch_size=abc", "data.batch_size='abc': must be a whole number"),
    ("data.use_features=maybe", "data.use_features='maybe': must be true or false"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: the run would train on nothing"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0: the run would train on nothing"),
    ("trainer.max_epochs=two", "trainer.max_epochs='two': must be a whole number or null"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: must be at least 0"),
    ("trainer.precision=bogus", "trainer.precision='bogus': must be one of 64, 32, 16"),
    ("seed=abc", "seed='abc': must be a whole number"),
    pytest.param("trainer=ddp", "trainer.accelerator=gpu: no CUDA GPU is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("monitor=val/FOO", "monitor='val/FOO': no epoch of this run logs it"),
    ("monitor_mode=up", "monitor_mode='up': must be max"),
    ("callbacks.caption_samples.num_samples=-1", "callbacks.caption_samples.num_samples=-1: must be at least 0"),
    ("data.source.sizes={train:0,val:16,test:16}", "data: the train split has no images"),
    ("data.source.sizes={train:6,val:16,test:16}", "data: the train split has 6 images, fewer than data.batch_size=8, "
                                                   "and training drops an epoch's incomplete last batch, so the run would "
                                                   "train on nothing and still report itself completed. Lower "
                                                   "data.batch_size to 6 or less"),
    ("data.source.sizes={train:64,val:0,test:16}", "data: the val split has no images"),
    ("data.source.sizes={train:64,val:16,test:0}", "data: the test split has no images"),
    ("model.decoder.hidden_dim=0", "model.decoder.hidden_dim=0: must be a positive whole number"),
    ("model.decoder.attn_dim=-3", "model.decoder.attn_dim=-3: must be a positive whole number"),
    ("model.decoder.dropout=1.5", "model.decoder.dropout=1.5: must be a probability"),
    ("data.max_len=0", "data.max_len=0: must be a whole number of at least 1"),
    ("data.batch_size=0", "data.batch_size=0: must be a whole number of at least 1"),
])
def test_bad_settings_stop_the_run_before_anything_is_written(tmp_path, override, message):
    cfg = compose_train(tmp_path, override)
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_train_split_without_a_whole_batch_for_each_process_is_refused(tmp_path):
    # 12 images are a batch of 8 in one process, but 6 in each of trainer=ddp_cpu's 2: no batch at all
    cfg = compose_train(tmp_path, "trainer=ddp_cpu", "data.source.sizes={train:12,val:16,test:16}")
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert str(err.value).startswith("data: the train split has 12 images, 6 for each of the 2 processes (a batch is per "
                                     "process), fewer than data.batch_size=8,"), str(err.value)
    assert "Lower data.batch_size to 6 or less" in str(err.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_hydra_flags_and_their_values_are_not_overrides():
    args = ["--cfg", "job", "model=lstm", "-p", "trainer", "--info", "defaults", "x=1", "-m", "--resolve", "--info", "y=2"]
    assert command_overrides(args) == ["model=lstm", "x=1", "y=2"]
    assert command_overrides(["--config-name=eval", "a=b"]) == ["a=b"]


def test_a_commands_own_settings_are_checked_by_type():
    from capgen.config.checks import check_values

    cfg = OmegaConf.create({"figures": "maybe", "n": 3})
    with pytest.raises(ValueError, match=r"^figures='maybe': must be true or false\.$"):
        check_values(cfg, {"n": int, "figures": bool})
    check_values(OmegaConf.create({"figures": True}), {"figures": bool})


@pytest.mark.parametrize("device, says", [("tpu", "device=tpu: not a device torch knows"), ("cuda:0", "no CUDA device"),
                                          (3, "device=3: give auto, cpu, cuda or cuda:N")])
def test_a_device_torch_does_not_know_is_named(device, says):
    from capgen.lightning.inference import resolve_device

    if device == "cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=says):
        resolve_device(device)
    assert resolve_device("cpu") == "cpu"


def test_a_missing_pretrained_weight_file_reaches_the_user_as_the_encoders_own_error(tmp_path, monkeypatch):
    """Built through Hydra, the encoder's FileNotFoundError used to arrive inside Hydra's
    InstantiationException ("Error in call to target ..."); it is raised as it is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = compose_train(tmp_path, "model/encoder=torchvision", "model.encoder.name=resnet18",
                        "model.encoder.weights=IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError) as err:
        train(cfg)
    assert str(err.value).startswith("model.encoder.weights=IMAGENET1K_V1: the weight file")


def test_a_key_its_constructor_does_not_take_is_named_with_the_close_match():
    from omegaconf import OmegaConf

    from capgen.config.checks import UnknownSetting, check_keys

    node = OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "_partial_": True, "hiden_dim": 3,
                             "dropout": 0.1})
    with pytest.raises(UnknownSetting, match=r"^model\.decoder\.hiden_dim: .* Did you mean model\.decoder\.hidden_dim\?"):
        check_keys(node, "model.decoder")
    check_keys(OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "hidden_dim": 3}), "model.decoder")
    nested = OmegaConf.create({"_target_": "capgen.data.datamodule.CaptionDataModule",
                               "source": {"_target_": "capgen.data.shapes.ShapesSource", "sizez": {}}})
    with pytest.raises(UnknownSetting, match=r"^data\.source\.sizez: .* Did you mean data\.source\.sizes\?"):
        check_keys(nested, "data")


# ----- numbers that are not numbers ------------------------------------------------------
TRAIN = ("debug=fast",)


NOT_NUMBERS = [
    # (command, its check, the override, the key the error must name)
    ("train", check_train, "model.module.optimizer.lr=nan", "model.module.optimizer.lr=nan"),
    ("train", check_train, "model.module.val.decode.length_penalty=nan", "model.module.val.decode.length_penalty=nan"),
    ("train", check_train, "model.module.objective.label_smoothing=inf", "model.module.objective.label_smoothing=inf"),
    ("train", check_train, "model.decoder.dropout=-inf", "model.decoder.dropout=-inf"),
    ("train", check_train, "callbacks.early_stopping.min_delta=nan", "callbacks.early_stopping.min_delta=nan"),
    ("train", check_train, "trainer.gradient_clip_val=inf", "trainer.gradient_clip_val=inf"),
    ("train", check_train, "data.batch_size=nan", "data.batch_size=nan"),  # a float where a whole number goes
    ("train", check_train, "experiment=shapes_scst model.module.objective.scst.lr=inf", "model.module.objective.scst.lr=inf"),
    ("eval", check_eval, "decode.length_penalty=nan", "decode.length_penalty=nan"),
    ("eval", check_eval, "decode.diversity_strength=nan", "decode.diversity_strength=nan"),
    ("eval", check_eval, "decode.temperature=inf", "decode.temperature=inf"),
    ("caption", check_caption, "decode.top_p=nan", "decode.top_p=nan"),
    ("caption", check_caption, "decode.temperature=-inf", "decode.temperature=-inf"),
    ("demo", check_demo, "decode.length_penalty=inf", "decode.length_penalty=inf"),
    ("prepare", None, "model.module.optimizer.lr=nan", "model.module.optimizer.lr=nan"),
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
    cfg = compose_command("train", *TRAIN, f"paths.output_dir={tmp_path}", "model.module.optimizer.lr=nan")
    with pytest.raises(ValueError, match=r"e\.g\. model\.module\.optimizer\.lr=0\.002 \(the default\)"):
        check_train(cfg)


MISSPELT = [
    # (command, its command line, the close match the refusal must name)
    ("eval", ["ckpt_path=x.ckpt", "decode.beam_sise=3"], "decode.beam_size"),  # a node without a constructor
    ("eval", ["ckpt_path=x.ckpt", "+data.batch_sz=3"], "data.batch_size"),  # Hydra's advice followed
    ("caption", ["ckpt_path=x.ckpt", "images=x.jpg", "batch_sise=3"], "batch_size"),  # a command's own setting
    ("caption", ["ckpt_path=x.ckpt", "images=x.jpg", "+batch_sise=3"], "batch_size"),
    ("demo", ["run=x", "+decode.beam_sise=3"], "decode.beam_size"),
    ("prepare", ["cache_dir=x", "model.encodr.widths=[8]"], "model.encoder"),
    ("train", ["+seeed=3"], "seed"),
]


@pytest.mark.parametrize("command, args, close", MISSPELT)
def test_a_misspelt_key_is_refused_in_every_command_naming_the_close_match(command, args, close, monkeypatch):
    from capgen.config.checks import UnknownSetting
    from capgen.config.command_line import command_line

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")  # restored after the test: command_line("train") sets it
    with pytest.raises(UnknownSetting, match=rf"Did you mean {re.escape(close)}\?"):
        command_line(command, args)


@pytest.mark.parametrize("command, args", [
    ("train", ["data.source.image_size=64"]),
    ("eval", ["ckpt_path=x.ckpt", "data.source.image_size=64"]),
    ("train", ["-m", "data.source.image_size=64,96"]),  # a sweep: the advice keeps every value
])
def test_a_setting_the_constructor_takes_but_no_config_lists_is_one_paragraph_saying_to_add_it(command, args, monkeypatch):
    from capgen.config.checks import UnlistedSetting
    from capgen.config.command_line import command_line

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")
    value = args[-1].split("=", 1)[1]
    with pytest.raises(UnlistedSetting, match=r"^data\.source\.image_size: capgen\.data\.shapes\.ShapesSource takes "
                       rf"image_size, but the config does not list it.* \+data\.source\.image_size={value}\. Nothing was written\.$"):
        command_line(command, args)
    command_line(command, [*args[:-1], f"+data.source.image_size={value}"])  # as it says


def test_the_settings_each_command_lists_or_adds_are_accepted(monkeypatch):
    from capgen.config.command_line import command_line

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")
    command_line("eval", ["ckpt_path=x.ckpt", "data.source.sizes.test=20", "decode.beam_size=3", "++device=cpu"])
    command_line("caption", ["ckpt_path=x.ckpt", "images=x.jpg", "decode=greedy", "batch_size=2"])
    command_line("train", ["+trainer.fast_dev_run=2", "model/encoder=resnet18", "seed=1"])
