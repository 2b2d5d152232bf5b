"""Settings checked at start-up: types against the constructors' annotations, the ranges the
constructors check, and the run-level settings (a run that trains on nothing, a monitor no
epoch logs); each error is one paragraph naming the key, the value and the fix, and comes
before anything is written into the run folder."""

from typing import Literal

import pytest
import torch
from omegaconf import OmegaConf

from capgen.training.config import command_overrides
from capgen.training.settings import check_types
from capgen.training.train import train

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
    from capgen.training.settings import UnknownSetting, check_keys

    module = {"_target_": "capgen.training.module.CaptioningModule"}
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


def test_hydra_flags_and_their_values_are_not_overrides():
    args = ["--cfg", "job", "model=lstm", "-p", "trainer", "--info", "defaults", "x=1", "-m", "--resolve", "--info", "y=2"]
    assert command_overrides(args) == ["model=lstm", "x=1", "y=2"]
    assert command_overrides(["--config-name=eval", "a=b"]) == ["a=b"]


def test_a_commands_own_settings_are_checked_by_type():
    from capgen.training.settings import check_values

    cfg = OmegaConf.create({"figures": "maybe", "n": 3})
    with pytest.raises(ValueError, match=r"^figures='maybe': must be true or false\.$"):
        check_values(cfg, {"n": int, "figures": bool})
    check_values(OmegaConf.create({"figures": True}), {"figures": bool})


@pytest.mark.parametrize("device, says", [("tpu", "device=tpu: not a device torch knows"), ("cuda:0", "no CUDA device"),
                                          (3, "device=3: give auto, cpu, cuda or cuda:N")])
def test_a_device_torch_does_not_know_is_named(device, says):
    from capgen.training.evaluate import resolve_device

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
