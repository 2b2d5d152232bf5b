"""What the machine offers, and how an encoder runs best on it.

Three choices depend on the hardware and are made here, by rules measured on the CPUs capgen
runs on (alternating pairs in one process; figures in docs/performance.md):

- Memory format. On the CPU the convolutional encoders run channels_last (NHWC), which
  oneDNN's convolutions run faster: ResNet-101's frozen forward 1.3x (AVX-512) to 1.5x (AVX2),
  RegNetX-400MF 1.3x, and the default SmallCNN's training step a few per cent (its
  forward and backward 1.2-1.3x at one thread, 1.0-1.05x at two). On other devices they stay
  contiguous: not measured there yet (scripts/benchmark.py's encoder section measures it).
  The `channels_last` setting (auto, true or false) forces either.
- bf16 on the CPU. Mixed bf16 is fast only where the CPU computes in bf16 natively
  (AVX512_BF16 or AMX on x86, FEAT_BF16 on Arm); elsewhere oneDNN emulates it and a step
  runs several times slower than fp32, so capgen keeps fp32 there unless forced
  (`allow_slow_bf16=true`).
- A frozen encoder's precision (`encoder_precision`: auto, bf16 or 32). Under auto an
  encoder none of whose weights train computes its forward pass under bf16 autocast wherever
  bf16 is native, whatever the trainer's precision: ResNet-101's frozen forward (batch 16,
  256x256, channels_last, 2 threads) ran 3.0x faster than fp32 on a Xeon with AMX and
  2.1x on an AMD EPYC Zen 4 with AVX512_BF16 and no AMX, and its features differ from fp32's
  by about 1% of their largest value. CUDA GPUs count where torch says they compute bf16
  without emulation (not measured yet). Where bf16 is emulated (an AVX2-only EPYC: 46 s
  against 6.6-8.0 s) the encoder runs in the caller's precision, fp32 by default. An encoder
  that trains keeps the trainer's precision: auto never changes a trained network's numbers
  or gradients. `bf16` forces bf16 (elsewhere only with `allow_slow_bf16=true`, as above),
  `32` forces fp32.

CPU flags come from /proc/cpuinfo (Linux): x86 lists them as `flags`, Arm as `Features`.
Elsewhere the list is empty, which reads as "no native bf16".
"""

from __future__ import annotations

import functools
import logging
import os
import platform

import torch
from torch import nn

log = logging.getLogger(__name__)

# The flags that decide how fast fp32 and bf16 run, as /proc/cpuinfo names them on x86 and Arm.
ISA_FLAGS = {"x86": ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"), "arm": ("asimd", "sve", "bf16")}
# With any of them bf16 is native: mixed precision may run, and a frozen encoder runs bf16 under
# encoder_precision=auto (both measured faster than fp32: module docstring). AMX is named first.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
ENCODER_PRECISIONS = ("auto", "bf16", "32")

# Measured on a 2-core AMD EPYC with AVX2 only (torch 2.14.1): ResNet-101's forward pass under
# bf16 autocast took 46 s, fp32 channels_last 6.6-8.0 s. Quoted by the warning below.
EMULATED_BF16_SLOWDOWN = "about 6x slower than fp32 (ResNet-101 forward on a 2-core AVX2 EPYC: 46 s against 6.6-8.0 s)"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed in /proc/cpuinfo's `text`: x86 names
    them `model name` and `flags`, Arm `Model` and `Features`."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:  # not Linux
        return "", frozenset()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where /proc/cpuinfo is absent."""
    return _cpuinfo()[1]


def cpu_model() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes in bf16 itself (x86 AVX512_BF16 or AMX-BF16, Arm FEAT_BF16)."""
    return native_bf16("cpu", flags) is not None


def cpu_precision(precision: str, allow_slow_bf16: bool = False, flags: frozenset[str] | None = None) -> str:
    """The Lightning precision a CPU run should use when `precision` is asked for: a bf16
    precision without native bf16 becomes 32-true (with a warning naming the slowdown),
    unless `allow_slow_bf16`."""
    precision = str(precision)
    if not precision.startswith("bf16") or has_native_bf16(flags) or allow_slow_bf16:
        return precision
    log.warning(
        "trainer.precision=%s: this CPU (%s) has no native bf16 (no avx512_bf16, amx_bf16 or bf16 flag), so bf16 "
        "runs emulated, %s. Running in 32-true instead; set allow_slow_bf16=true to use bf16 anyway.",
        precision, cpu_model(), EMULATED_BF16_SLOWDOWN,
    )
    return "32-true"


def parse_channels_last(value) -> bool | None:
    """The `channels_last` setting: true, false, or auto (None: decided per device)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        return {"auto": None, "true": True, "false": False}[value.lower()]
    raise ValueError(
        f"channels_last={value!r}: use auto (channels_last for convolutional encoders on the CPU, where it "
        "measured faster), true or false"
    )


def prefers_channels_last(device_type: str) -> bool:
    """The auto rule (see the module docstring): channels_last on the CPU, contiguous elsewhere."""
    return device_type == "cpu"


def encoder_settings(cfg) -> dict:
    """A command's settings of how its encoder runs, as configure_encoder's keywords:
    channels_last, encoder_precision (as `precision`) and allow_slow_bf16, each at its default
    where the config has none. Checked here, so that a bad value stops a command before any work."""
    settings = {"channels_last": cfg.get("channels_last", "auto"), "precision": cfg.get("encoder_precision", "auto"),
                "allow_slow_bf16": cfg.get("allow_slow_bf16", False)}
    parse_channels_last(settings["channels_last"])
    parse_encoder_precision(settings["precision"])
    _check_allow_slow_bf16(settings["allow_slow_bf16"])
    return settings


def _check_allow_slow_bf16(value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"allow_slow_bf16={value!r}: use true or false")


def configure_encoder(encoder: nn.Module, channels_last="auto", device_type: str = "cpu", precision="auto",
                      allow_slow_bf16: bool = False, surrounding: str = "fp32") -> bool:
    """Put `encoder`, which is to run on a `device_type` device ("cpu", "cuda"...), into the
    memory format that `channels_last` (true, false or auto) asks for, and the precision that
    `precision` (the encoder_precision setting) asks for (see set_encoder_precision); returns
    whether it is channels_last. Encoders without a set_memory_format (not convolutional) are
    left as they are."""
    choice = parse_channels_last(channels_last)
    parse_encoder_precision(precision)
    _check_allow_slow_bf16(allow_slow_bf16)
    if not hasattr(encoder, "set_memory_format"):
        return False
    on = prefers_channels_last(device_type) if choice is None else choice
    encoder.set_memory_format(channels_last=on)
    log.info("encoder memory format: %s (channels_last=%s, on %s)", "channels_last" if on else "contiguous",
             channels_last, device_type)
    set_encoder_precision(encoder, precision, device_type, allow_slow_bf16, surrounding)
    return on


def parse_encoder_precision(value) -> str:
    """The `encoder_precision` setting: auto, bf16 or 32 (YAML and the command line read 32 as a number)."""
    text = str(value).lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text in ENCODER_PRECISIONS:
        return text
    raise ValueError(
        f"encoder_precision={value!r}: use auto (a frozen encoder computes in bf16 where the device does so "
        "natively, fp32 elsewhere), bf16 (always, for a frozen or a trained encoder) or 32 (fp32 always); e.g. "
        "encoder_precision=32 on the command line or in the command's config (conf/<command>.yaml)."
    )


def native_bf16(device_type: str, flags: frozenset[str] | None = None) -> str | None:
    """What makes a `device_type` device compute bf16 natively (a CPU flag, or the GPU's
    compute capability), or None where bf16 would be emulated or is unknown."""
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return f"the GPU ({torch.cuda.get_device_name()}) computes bf16 natively"
        return None
    if device_type != "cpu":
        return None
    flags = cpu_flags() if flags is None else flags
    return next((f"this CPU computes bf16 natively ({f})" for f in NATIVE_BF16_FLAGS if f in flags), None)


def choose_encoder_precision(setting, frozen: bool, device_type: str, allow_slow_bf16: bool = False,
                             flags: frozenset[str] | None = None) -> tuple[torch.dtype | None, str]:
    """The rule (module docstring) for the `encoder_precision` setting: (the dtype the encoder's
    forward computes in, None for its caller's precision; why). auto: bf16 for a frozen encoder
    on a device with native bf16, else the caller's (a trained encoder's gradients keep the
    trainer's precision). bf16 without native bf16: fp32 with a warning, unless allow_slow_bf16."""
    setting = parse_encoder_precision(setting)
    native = native_bf16(device_type, flags)
    if setting == "32":
        return torch.float32, "asked for"
    if setting == "bf16":
        if native or allow_slow_bf16:
            return torch.bfloat16, f"asked for; {native or 'emulated here (allow_slow_bf16=true)'}"
        log.warning(
            "encoder_precision=bf16: %s, so bf16 would run emulated, %s. Running the encoder in fp32 instead; set "
            "allow_slow_bf16=true to use bf16 anyway.", _not_native(device_type),
            EMULATED_BF16_SLOWDOWN if device_type == "cpu" else "slower than fp32",
        )
        return torch.float32, "bf16 asked for, but not native here"
    if not frozen:
        return None, "the encoder is trainable (not frozen): it keeps the precision it was trained in"
    if native is None:
        return None, _not_native(device_type)
    return torch.bfloat16, f"the encoder is frozen and {native}"


def _not_native(device_type: str) -> str:
    if device_type == "cpu":
        return (f"this CPU ({cpu_model()}) has no native bf16 "
                f"(none of the flags {', '.join(NATIVE_BF16_FLAGS)})")
    if device_type == "cuda":
        return "this GPU has no native bf16 (torch.cuda.is_bf16_supported(including_emulation=False) is false)"
    return f"bf16 is not measured on {device_type} devices"


def set_encoder_precision(encoder: nn.Module, setting="auto", device_type: str = "cpu", allow_slow_bf16: bool = False,
                          surrounding: str = "fp32") -> torch.dtype | None:
    """Apply choose_encoder_precision to `encoder` (its set_precision), logged in one line;
    `surrounding` names the caller's precision, what the encoder follows when the rule says
    None (a trainer's precision, e.g. 32-true). Returns the dtype set."""
    dtype, why = choose_encoder_precision(setting, getattr(encoder, "frozen", False), device_type, allow_slow_bf16)
    encoder.set_precision(dtype)
    ran = {torch.bfloat16: "bf16 autocast", torch.float32: "fp32", None: f"{surrounding}, the caller's"}[dtype]
    log.info("encoder precision: %s (encoder_precision=%s, on %s: %s)", ran, setting, device_type, why)
    return dtype


def machine() -> dict:
    """The machine a measurement ran on: CPU model, the ISA flags that matter, threads, GPU."""
    flags = cpu_flags()
    family = "arm" if platform.machine().lower() in ("aarch64", "arm64") else "x86"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": {f: f in flags for f in ISA_FLAGS[family]},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
