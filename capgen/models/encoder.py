"""Image encoders: uint8 images (B, 3, H, W) -> a grid of features (B, D, h, w).

Here a small CNN trained from scratch (the default for the built-in shapes data), any
torchvision classification backbone truncated to its last spatial feature map, and what every
pretrained backbone shares (`StagedEncoder`: which stages train; `ModelInput`: the image size
and normalisation a library's model expects). timm models and open_clip's image towers are in
timm_encoder.py and clip_encoder.py. Each gives a square grid of `grid` x `grid` cells, so the
decoders attend over P = grid * grid cells.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

# ImageNet statistics: torchvision backbones expect them, and they are a fine
# normalisation for a CNN trained from scratch too.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    """uint8 or [0, 1] float images -> float normalised by `mean` and `std` (ImageNet's by default)."""

    def __init__(self, mean: tuple[float, ...] = _MEAN, std: tuple[float, ...] = _STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return (images - self.mean) / self.std


class ModelInput(_Normalize):
    """uint8 images (B, 3, H, W) -> the input a library's model was trained on: resized to
    `size` x `size` (the whole image, with `interpolation` and antialiasing; capgen's images are
    square already) and normalised by the mean and std of the model's pretrained config. One
    path for every pretrained backbone, so features never depend on where an image came from."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str = "bicubic"):
        super().__init__(mean, std)
        self.size = size
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = super().forward(images)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode=self.interpolation, align_corners=False, antialias=True)
        return x


class ConvEncoder(nn.Module):
    """normalize -> body (convolutions) -> pool to the grid; subclasses build the three.

    set_memory_format(channels_last=True) stores the convolution weights NHWC and converts
    each batch on entry, so every map stays NHWC (oneDNN's and cuDNN's fast layout for wide
    convolutions). The features are the same numbers either way (tested); the output
    (B, D, h, w) is then laid out as (B, h, w, D), which Captioner.encode's (B, P, D) view
    reads without a copy. capgen.lightning.hardware decides which format an encoder gets.

    set_precision(dtype) makes the forward pass compute in `dtype` whatever autocast its caller
    runs under: torch.bfloat16 (bf16 autocast, fp32 weights kept) or torch.float32 (autocast
    off); None (the default) follows the caller's. Either way the features come out in the
    dtype the caller's setting would have given (the weights' dtype, or its autocast dtype), so
    the decoder's inputs never change dtype. capgen.lightning.hardware decides this too.
    """

    channels_last = False
    precision: torch.dtype | None = None

    def set_memory_format(self, channels_last: bool) -> None:
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.channels_last = channels_last

    def set_precision(self, dtype: torch.dtype | None) -> None:
        if dtype not in (None, torch.bfloat16, torch.float32):
            raise ValueError(f"encoder precision {dtype}: use torch.bfloat16, torch.float32 or None (the caller's)")
        self.precision = dtype

    @property
    def frozen(self) -> bool:
        """No weight trains: what the forward pass computes needs no gradient's precision."""
        return not any(p.requires_grad for p in self.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.precision is None:
            return self._features(images)
        device = images.device.type
        outer = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == torch.bfloat16):
            feats = self._features(images)  # (B, D, h, w), bf16 under bf16 autocast
        # The dtype the caller's own setting gives: its autocast's, else the weights' (the decoder's).
        return feats.to(outer or next(self.parameters()).dtype)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(self.normalize(images)))


class SmallCNN(ConvEncoder):
    """Four conv-BN-ReLU stages (three stride-2) -> (B, width[-1], H/8, W/8), pooled to `grid`."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), grid: int = 8):
        super().__init__()
        layers, c_in = [], 3
        for k, c_out in enumerate(widths):
            stride = 2 if k < 3 else 1
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.normalize = _Normalize()
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.out_dim, self.grid = c_in, grid


def _weights_file(weights: torchvision.models.WeightsEnum) -> str:
    """Where torch.hub keeps a downloaded weight file ($TORCH_HOME/hub/checkpoints/...)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _trunk(model: nn.Module, name: str) -> list[nn.Module]:
    """The backbone's stages up to its last spatial feature map, as a list of blocks."""
    if hasattr(model, "layer4"):  # resnet, resnext, wide_resnet
        return list(model.children())[:-2]  # drop avgpool, fc
    if hasattr(model, "trunk_output"):  # regnet
        return [model.stem, *model.trunk_output.children()]
    if hasattr(model, "features"):  # vgg, mobilenet, efficientnet, convnext, densenet
        return list(model.features.children())
    raise ValueError(
        f"model.encoder.name={name!r}: cannot find its convolutional trunk; supported families "
        "are resnet/resnext/wide_resnet, regnet, and models with a .features stack "
        "(vgg, mobilenet, efficientnet, convnext, densenet)"
    )


FINETUNE = ("frozen", "last", "all")


def check_finetune(finetune: str, finetune_last: int) -> None:
    if finetune not in FINETUNE:
        raise ValueError(f"model.encoder.finetune={finetune!r}: use one of frozen, last, all")
    if isinstance(finetune_last, bool) or not isinstance(finetune_last, int) or finetune_last < 0:
        raise ValueError(f"model.encoder.finetune_last={finetune_last!r}: give the number of last stages that train, e.g. 2")


def _whole_modules(module: nn.Module, frozen: set[int]):
    """The largest submodules of `module` that hold parameters and only frozen ones (ids in `frozen`)."""
    params = list(module.parameters())
    if params and all(id(p) in frozen for p in params):
        yield module
        return
    for child in module.children():
        yield from _whole_modules(child, frozen)


class StagedEncoder(ConvEncoder):
    """A backbone as a list of stages, input to output, of which the last ones train:

    finetune: "frozen" (no gradients; BatchNorm statistics and dropout kept in eval mode),
    "last" (only the last `finetune_last` stages train, as in the Show-Attend-Tell recipes), or
    "all". A stage is a list of modules and parameters; each library names its own (torchvision:
    the trunk's blocks; timm: its parameter groups; open_clip: its towers' lock groups).
    """

    _frozen: tuple[nn.Module, ...] = ()

    def freeze_stages(self, stages: list[list[nn.Module | nn.Parameter]], finetune: str, finetune_last: int) -> None:
        n_frozen = {"frozen": len(stages), "last": max(len(stages) - finetune_last, 0), "all": 0}[finetune]
        frozen = [p for stage in stages[:n_frozen] for part in stage
                  for p in ([part] if isinstance(part, nn.Parameter) else part.parameters())]
        for p in frozen:
            p.requires_grad_(False)
        # A plain tuple, not a ModuleList: the modules are registered once, under body.
        ids = {id(p) for p in frozen}
        self._frozen = tuple(m for child in self.children() for m in _whole_modules(child, ids))
        self.finetune, self.n_stages = finetune, len(stages)
        self.train(self.training)  # the frozen modules in eval mode from now on, not from the first train()

    def dry_run(self, size: int) -> torch.Tensor:
        """The features (1, D, h, w) of a black size x size image, in eval mode, so that the
        dry run leaves BatchNorm's running statistics (pretrained ones) as they were."""
        mode = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._features(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        finally:
            self.train(mode)

    def measure_grid(self, grid: int | None, size: int, what: str) -> None:
        """Sets the pooling (to grid x grid; None: the map as the model makes it), then out_dim
        and grid from a dry run at size x size. `what` names the model in the error for a
        map that is not square."""
        self.pool = nn.Identity() if grid is None else nn.AdaptiveAvgPool2d(grid)
        feats = self.dry_run(size)  # (1, D, h, w)
        if feats.shape[-2] != feats.shape[-1]:
            raise ValueError(f"model.encoder: {what} makes a {feats.shape[-2]}x{feats.shape[-1]} map of a square "
                             "image; set model.encoder.grid to pool it to a square grid")
        self.out_dim, self.grid = feats.shape[1], feats.shape[-1]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen:  # frozen stages keep their BatchNorm statistics
            module.eval()
        return self


class TorchvisionEncoder(StagedEncoder):
    """A torchvision classification backbone truncated to its last spatial map.

    finetune, finetune_last: as StagedEncoder says; the stages are the trunk's blocks (a ResNet's
    conv1, bn1, relu, maxpool, layer1 ... layer4).
    weights: a torchvision weights name such as "IMAGENET1K_V1", or None for random init.
    Nothing is downloaded unless `download=True`: offline, the error names the file.
    """

    def __init__(
        self,
        name: str = "resnet101",
        weights: str | None = None,
        grid: int = 14,
        finetune: Literal["frozen", "last", "all"] = "frozen",
        finetune_last: int = 2,
        download: bool = False,
    ):
        super().__init__()
        check_finetune(finetune, finetune_last)
        try:
            builder = torchvision.models.get_model_builder(name)
        except ValueError as e:
            raise ValueError(
                f"model.encoder.name={name!r} is not a torchvision model; see "
                "torchvision.models.list_models() for valid names"
            ) from e
        model = builder(weights=None)
        if weights is not None:
            model.load_state_dict(self._load_weights(name, weights, download))
        stages = _trunk(model, name)
        self.normalize = _Normalize()
        self.body = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.grid = grid
        self.out_dim = self.dry_run(64).shape[1]  # the channel count of the last map
        self.freeze_stages([[stage] for stage in stages], finetune, finetune_last)

    @staticmethod
    def _load_weights(name: str, weights: str, download: bool) -> dict:
        try:
            enum = torchvision.models.get_model_weights(name)[weights]
        except KeyError as e:
            options = [w.name for w in torchvision.models.get_model_weights(name)]
            raise ValueError(f"model.encoder.weights={weights!r}: {name} offers {options} or null") from e
        path = _weights_file(enum)
        if not os.path.exists(path) and not download:
            raise FileNotFoundError(
                f"model.encoder.weights={weights}: the weight file {path} is missing. Download "
                f"{enum.url} and put it there (torch looks in $TORCH_HOME/hub/checkpoints, "
                f"TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), or set "
                "model.encoder.download=true on a machine with internet, or weights=null."
            )
        return enum.get_state_dict(progress=True, check_hash=True)
