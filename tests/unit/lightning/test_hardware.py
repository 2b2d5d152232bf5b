"""Encoder execution chosen for the machine (capgen.lightning.hardware): channels_last gives the
same features and gradients as the contiguous layout, the auto rule and the settings, the
bf16 decision following the CPU's flags (mocked both ways), and the frozen encoder's precision
(encoder_precision): the rule per device and encoder, and what bf16 does to its features."""

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
ZEN4_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
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


class _SetUp(Exception):
    """capgen-train stopped once its encoder is set up."""


@pytest.fixture
def train_until_encoder_set_up(monkeypatch):
    """train(cfg) up to its configure_encoder call: returns the encoder as it was set up."""
    from capgen.commands.train import fit as training

    configured, real = [], training.configure_encoder

    def configure_then_stop(encoder, *args, **kwargs):
        real(encoder, *args, **kwargs)
        configured.append(encoder)
        raise _SetUp

    monkeypatch.setattr(training, "configure_encoder", configure_then_stop)

    def run(cfg):
        with pytest.raises(_SetUp):
            training.train(cfg)
        return configured[-1]

    return run


def test_capgen_train_runs_the_encoder_channels_last_on_the_cpu(make_cfg, train_until_encoder_set_up):
    """What capgen-train builds: the default SmallCNN on the CPU runs channels_last, and
    channels_last=false keeps it contiguous. Start-up only: the run stops once its encoder is set up."""
    for setting, expected in (("auto", True), ("false", False)):
        encoder = train_until_encoder_set_up(make_cfg(f"channels_last={setting}", "test=false", name=setting))
        assert encoder.channels_last is expected
        conv = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
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


# ----- the frozen encoder's precision (encoder_precision) --------------------------------------
def _flags(cpuinfo: str) -> frozenset[str]:
    return hardware.parse_cpuinfo(cpuinfo)[1]


BF16, FP32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize("cpuinfo, frozen, setting, allow, expected", [
    (SAPPHIRE_RAPIDS, True, "auto", False, BF16),   # AMX: 3.0x faster (docs/performance.md)
    (ZEN4_EPYC, True, "auto", False, BF16),         # avx512_bf16 without AMX
    (ARM_NEOVERSE_V1, True, "auto", False, BF16),
    (AVX2_EPYC, True, "auto", False, None),         # emulated, several times slower: the caller's fp32
    ("", True, "auto", False, None),                # flags unknown (not Linux)
    (SAPPHIRE_RAPIDS, False, "auto", False, None),  # a trained encoder: the trainer's precision
    (SAPPHIRE_RAPIDS, True, "32", False, FP32),
    (SAPPHIRE_RAPIDS, True, 32, False, FP32),       # YAML's and the command line's 32
    (AVX2_EPYC, False, "bf16", False, FP32),        # forced without native bf16: fp32 and a warning
    (AVX2_EPYC, False, "bf16", True, BF16),         # ... unless allow_slow_bf16
    (SAPPHIRE_RAPIDS, False, "BF16", False, BF16),  # forced: also a trained encoder (fp32 weights kept)
])  # fmt: skip
def test_encoder_precision_rule_on_the_cpu(cpuinfo, frozen, setting, allow, expected, caplog):
    with caplog.at_level(logging.WARNING, logger=hardware.__name__):
        dtype, why = hardware.choose_encoder_precision(setting, frozen, "cpu", allow, _flags(cpuinfo))
    assert dtype == expected and why
    if not frozen and setting == "auto":  # also said by eval, caption, demo and prepare, where nothing trains
        assert why == "the encoder is trainable (not frozen): it keeps the precision it was trained in"
    warned = expected == FP32 and str(setting) == "bf16"
    assert ("encoder_precision=bf16" in caplog.text and "allow_slow_bf16=true" in caplog.text) is warned


def test_encoder_precision_rule_on_gpus(monkeypatch):
    """A CUDA GPU counts as native where torch says it computes bf16 without emulation; other
    devices (mps, ...) are not measured: the caller's precision."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100")
    asked = []
    for native in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: asked.append(
            including_emulation) or n)
        dtype, why = hardware.choose_encoder_precision("auto", True, "cuda")
        assert dtype == (BF16 if native else None) and ("H100" in why) is native
    assert asked == [False, False]  # emulated bf16 (a V100's) is not native
    assert hardware.choose_encoder_precision("auto", True, "mps")[0] is None


@pytest.mark.parametrize("value", ["fp16", "bf16-mixed", "float32", True, None, 16])
def test_bad_encoder_precision_is_one_clear_error(value):
    with pytest.raises(ValueError, match=r"^encoder_precision=.*: use auto .*, bf16 .* or 32 .*encoder_precision=32"):
        hardware.parse_encoder_precision(value)
    with pytest.raises(ValueError, match="encoder_precision="):  # what every command checks before any work
        hardware.encoder_settings({"encoder_precision": value})
    with pytest.raises(ValueError, match="allow_slow_bf16='yes': use true or false"):
        hardware.encoder_settings({"allow_slow_bf16": "yes"})


def _frozen_resnet18():
    torch.manual_seed(0)
    cfg = {"encoder": {"_target_": "capgen.models.TorchvisionEncoder", "name": "resnet18", "grid": 2},
           "decoder": {"_target_": "capgen.models.AttentionDecoder", "_partial_": True, "embed_dim": 8,
                       "hidden_dim": 8, "attn_dim": 8}}  # fmt: skip
    return build_captioner(cfg, vocab_size=10).eval()


IMAGES = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_frozen_encoder_under_auto_computes_in_bf16_and_hands_the_decoder_its_dtype(monkeypatch, caplog):
    """A frozen random-init ResNet-18 on a CPU with native bf16 (flags mocked): auto runs it in
    bf16 (its features differ from fp32 by bf16's rounding, far more than fp32's) and the
    decoder still gets float32 features; 32 gives exactly the fp32 features, also under a
    caller's bf16 autocast (a bf16-mixed trainer), whose dtype the features are handed on in."""
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(ZEN4_EPYC))
    net = _frozen_resnet18()
    net.encoder.set_memory_format(channels_last=True)  # as every command does on the CPU
    with torch.inference_mode():
        fp32 = net.encode(IMAGES)  # (B, P, D) = (4, 4, 512)
        with caplog.at_level(logging.INFO, logger=hardware.__name__):
            assert hardware.set_encoder_precision(net.encoder, "auto", "cpu") == BF16
        bf16 = net.encode(IMAGES)
        assert hardware.set_encoder_precision(net.encoder, "32", "cpu") == FP32
        forced32 = net.encode(IMAGES)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            forced32_in_autocast = net.encode(IMAGES)
            net.encoder.set_precision(BF16)
            bf16_in_autocast = net.encode(IMAGES)
    assert caplog.text.count("encoder precision:") == 1
    assert "encoder precision: bf16 autocast (encoder_precision=auto, on cpu: the encoder is frozen and this CPU " \
           "computes bf16 natively (avx512_bf16))" in caplog.text
    assert fp32.shape == bf16.shape == (4, 4, 512) and bf16.dtype == torch.float32
    relative = ((bf16 - fp32).abs().max() / fp32.abs().max()).item()
    assert 1e-4 < relative < 3e-2, relative  # bf16 ran (8-bit mantissa), and stayed close
    assert torch.equal(bf16.to(torch.bfloat16).float(), bf16)  # every value a bf16 one: computed in bf16
    assert torch.equal(forced32, fp32)
    # Under the caller's bf16 autocast, 32 computes in fp32 and hands on the caller's dtype: fp32's features rounded.
    assert torch.equal(forced32_in_autocast, fp32.to(torch.bfloat16))
    assert bf16_in_autocast.dtype == torch.bfloat16  # the caller's autocast dtype, as without the setting


@pytest.mark.parametrize("encoder", ["small_cnn", "resnet18_last", "resnet18_all"])
def test_trained_encoders_are_never_autocast_by_auto(encoder, monkeypatch):
    """An encoder with weights that train (the default SmallCNN, a fine-tuned backbone) keeps
    the caller's precision under auto, even on a CPU with AMX: its gradients and the run's
    numbers stay the trainer's."""
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(SAPPHIRE_RAPIDS))
    torch.manual_seed(0)
    net = {"small_cnn": lambda: SmallCNN(widths=(4, 8, 8, 16), grid=2),
           "resnet18_last": lambda: TorchvisionEncoder("resnet18", grid=2, finetune="last"),
           "resnet18_all": lambda: TorchvisionEncoder("resnet18", grid=2, finetune="all")}[encoder]()
    assert not net.frozen
    before = net(IMAGES)
    hardware.configure_encoder(net, "false", "cpu", precision="auto")
    assert net.precision is None and torch.equal(net(IMAGES), before)


def test_capgen_train_sets_a_frozen_encoders_precision(make_cfg, train_until_encoder_set_up, monkeypatch):
    """capgen-train on a CPU with native bf16 (flags mocked): a frozen backbone runs bf16 under
    auto, fp32 under encoder_precision=32; the default SmallCNN, which trains, follows the trainer."""
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(SAPPHIRE_RAPIDS))
    frozen = ("model/encoder=torchvision", "model.encoder.name=resnet18", "+model.encoder.grid=2",
              "+model.encoder.finetune=frozen")
    for overrides, expected in ((frozen, BF16), ((*frozen, "encoder_precision=32"), FP32), ((), None)):
        cfg = make_cfg(*overrides, "test=false", name=str(len(overrides)))
        assert train_until_encoder_set_up(cfg).precision == expected
    with pytest.raises(ValueError, match="encoder_precision='half'"):
        train_until_encoder_set_up(make_cfg("encoder_precision=half", name="bad"))
