"""Encoder execution chosen for the machine (capgen.lightning.hardware): channels_last gives the
same features and gradients as the contiguous layout, the auto rule and the settings, and the
bf16 decision following the CPU's flags (mocked both ways)."""

import copy
import logging

import pytest
import torch
from hydra import compose, initialize_config_dir

from capgen import config as capgen_config
from capgen.commands.train.fit import choose_precision
from capgen.lightning import hardware
from capgen.models import SmallCNN, TorchvisionEncoder, build_captioner

AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 bmi2 sha_ni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
ARM_NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm sve
"""


def _encoders():
    torch.manual_seed(0)
    return [SmallCNN(widths=(4, 8, 8, 16), grid=3),
            TorchvisionEncoder("resnet18", grid=2, finetune="all")]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("index", [0, 1], ids=["small_cnn", "resnet18"])
def test_channels_last_gives_the_same_features_and_gradients(index, dtype):
    """Training mode (BatchNorm on batch statistics), forward and backward: the channels_last
    encoder's features and every weight's gradient equal the contiguous one's (float64: to
    rounding; float32: oneDNN's NHWC kernels, which sum in another order)."""
    contiguous = _encoders()[index].to(dtype).train()
    nhwc = copy.deepcopy(contiguous)
    nhwc.set_memory_format(channels_last=True)
    assert nhwc.channels_last and not contiguous.channels_last
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.ndim == 4)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 40, 40, generator=g, dtype=dtype)
    feats = {}
    for name, enc in (("contiguous", contiguous), ("nhwc", nhwc)):
        out = enc(images)  # (B, D, h, w)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        (out * upstream).sum().backward()
        feats[name] = out
    assert feats["nhwc"].is_contiguous(memory_format=torch.channels_last)
    # Compared relative to each tensor's largest value (float32: 18 layers of BatchNorm on 3 images).
    tol = {"rtol": 0, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 0, "atol": 2e-5}

    def close(a, b, msg=None):
        scale = b.abs().max()
        torch.testing.assert_close(a / scale, b / scale, **tol, msg=msg)

    close(feats["nhwc"], feats["contiguous"])
    grads = {n: p.grad for n, p in contiguous.named_parameters()}
    assert grads and all(g is not None for g in grads.values())
    for n, p in nhwc.named_parameters():
        close(p.grad, grads[n], msg=n)


def test_channels_last_frozen_encoder_features_in_inference():
    """A frozen backbone as capgen-prepare and a frozen-encoder run use it: eval mode, inference
    mode, uint8 images; Captioner.encode's (B, P, D) then needs no copy."""
    torch.manual_seed(0)
    cfg = {"encoder": {"_target_": "capgen.models.TorchvisionEncoder", "name": "resnet18", "grid": 2},
           "decoder": {"_target_": "capgen.models.AttentionDecoder", "_partial_": True, "embed_dim": 8,
                       "hidden_dim": 8, "attn_dim": 8}}  # fmt: skip
    net = build_captioner(cfg, vocab_size=10).eval()
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = net.encode(images)
        net.encoder.set_memory_format(channels_last=True)
        nhwc = net.encode(images)
    assert nhwc.shape == plain.shape == (2, 4, 512) and nhwc.is_contiguous()
    torch.testing.assert_close(nhwc, plain, rtol=1e-4, atol=1e-5)


def test_auto_rule_and_forced_settings(caplog):
    """auto: channels_last on the CPU (measured faster for both encoders), contiguous on other
    devices (not measured); true/false force it; non-convolutional encoders are left alone."""
    for encoder in _encoders():
        with caplog.at_level(logging.INFO, logger=hardware.__name__):
            assert hardware.configure_encoder(encoder, "auto", "cpu") is True and encoder.channels_last
        assert "encoder memory format: channels_last (channels_last=auto, on cpu)" in caplog.text
        assert hardware.configure_encoder(encoder, "auto", "cuda") is False and not encoder.channels_last
        assert next(encoder.parameters()).is_contiguous()
        assert hardware.configure_encoder(encoder, True, "cuda") is True and encoder.channels_last
        assert hardware.configure_encoder(encoder, "false", "cpu") is False and not encoder.channels_last
    assert hardware.configure_encoder(torch.nn.Linear(2, 2), True) is False  # not convolutional: left alone


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_channels_last_setting_is_one_clear_error(value):
    with pytest.raises(ValueError, match=r"channels_last=.*use auto .* true or false"):
        hardware.parse_channels_last(value)


@pytest.mark.parametrize("text, model, native", [(AVX2_EPYC, "AMD EPYC 7B13", False),
                                                 (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C", True),
                                                 (ARM_NEOVERSE_V1, "", True), ("", "", False)])  # fmt: skip
def test_cpuinfo_flags_decide_native_bf16(text, model, native):
    name, flags = hardware.parse_cpuinfo(text)
    assert name == model
    assert hardware.has_native_bf16(flags) is native


def test_bf16_on_a_cpu_without_native_bf16_keeps_fp32_and_warns(caplog):
    _, avx2 = hardware.parse_cpuinfo(AVX2_EPYC)
    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        assert hardware.cpu_precision("bf16-mixed", flags=avx2) == "32-true"
    assert "trainer.precision=bf16-mixed" in caplog.text and "allow_slow_bf16=true" in caplog.text
    assert "slower than fp32" in caplog.text
    caplog.clear()
    assert hardware.cpu_precision("bf16-true", allow_slow_bf16=True, flags=avx2) == "bf16-true"  # forced
    for other in ("32-true", "16-mixed", "64-true"):  # not bf16: not this rule's business
        assert hardware.cpu_precision(other, flags=avx2) == other
    assert not caplog.text


def test_bf16_on_a_cpu_with_native_bf16_stays():
    for text in (SAPPHIRE_RAPIDS, ARM_NEOVERSE_V1):
        assert hardware.cpu_precision("bf16-mixed", flags=hardware.parse_cpuinfo(text)[1]) == "bf16-mixed"


def test_capgen_train_runs_the_encoder_channels_last_on_the_cpu(make_cfg, monkeypatch):
    """What capgen-train builds: the default SmallCNN on the CPU runs channels_last, and
    channels_last=false keeps it contiguous. Start-up only: the run stops once its encoder is set up."""
    from capgen.commands.train import fit as training

    class SetUp(Exception):
        pass

    configured, real = [], training.configure_encoder

    def configure_then_stop(encoder, *args):
        real(encoder, *args)
        configured.append(encoder)
        raise SetUp

    monkeypatch.setattr(training, "configure_encoder", configure_then_stop)
    for setting, expected in (("auto", True), ("false", False)):
        with pytest.raises(SetUp):
            training.train(make_cfg(f"channels_last={setting}", "test=false", name=setting))
        assert configured[-1].channels_last is expected
        conv = next(m for m in configured[-1].modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected


def _train_cfg(*overrides):
    capgen_config.register()
    with initialize_config_dir(config_dir=capgen_config.CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("cpuinfo, forced, expected", [(AVX2_EPYC, False, "32-true"), (AVX2_EPYC, True, "bf16-mixed"),
                                                       (SAPPHIRE_RAPIDS, False, "bf16-mixed")])  # fmt: skip
def test_capgen_train_precision_follows_the_cpu_flags(monkeypatch, cpuinfo, forced, expected):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(cpuinfo))
    cfg = _train_cfg("trainer.precision=bf16-mixed", f"allow_slow_bf16={str(forced).lower()}")
    choose_precision(cfg)
    assert cfg.trainer.precision == expected


def test_capgen_train_leaves_gpu_precision_alone(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(AVX2_EPYC))
    cfg = _train_cfg("trainer=gpu")
    choose_precision(cfg)
    assert cfg.trainer.precision == "bf16-mixed"  # a GPU's bf16 is not the CPU's business
    with pytest.raises(ValueError, match="allow_slow_bf16='yes': use true or false"):
        choose_precision(_train_cfg("allow_slow_bf16=yes"))
