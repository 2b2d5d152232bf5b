"""Any timm model whose last feature map is a grid, as an encoder (`model/encoder=timm`, extra `[timm]`).

A convolutional network (ConvNeXt, ResNet, EfficientNet, ...) gives its last stage's map; a
vision transformer gives its patch tokens after the final norm, its class and register tokens
dropped, laid out as the h x w grid they came from. timm's own `forward_intermediates` does
both, and `prune_intermediate_layers` removes the classifier head, so no weight is left that
the features do not use.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .encoder import ModelInput, StagedEncoder, check_finetune
from .pretrained import WeightSource, import_extra, missing_weights, torch_hub_folder


def timm_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's stages, input to output, as timm groups its parameters for layer-wise learning
    rates (group_matcher(coarse=True)): a ConvNeXt's stem and four stages; a ViT's patch
    embedding (with the class, register and position tokens), then one stage per block, the final
    norm with the last block."""
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    return [[model.get_parameter(name) for name in groups[k]] for k in sorted(groups)]


def _weight_source(cfg) -> WeightSource:
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME  # the names timm downloads

    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
    return WeightSource(repo=cfg.hf_hub_id or None, filenames=names, url=cfg.url or None,
                        url_cache=torch_hub_folder() if cfg.url else None)


class TimmEncoder(StagedEncoder):
    """timm model `name` -> (B, D, grid, grid).

    weights: a pretrained tag of the model (`timm.list_pretrained("<name>.*")` lists them, e.g.
    fb_in22k_ft_in1k for convnext_tiny), read from the Hugging Face cache; None: random init.
    grid: the side the map is average-pooled to; None: the model's own (a ViT-B/16 at 224: 14).
    image_size: the side images are resized to; None: the size in the weights' pretrained config
    (224 for most). Images are normalised with that config's mean and std.
    finetune, finetune_last: as StagedEncoder says; the stages are timm's (timm_stages).
    download: let timm download missing weights (else a missing file is an error naming it).
    model_args: more keyword arguments for timm.create_model (e.g. drop_path_rate, reg_tokens).
    """

    def __init__(
        self,
        name: str = "convnext_tiny",
        weights: str | None = None,
        grid: int | None = None,
        image_size: int | None = None,
        finetune: Literal["frozen", "last", "all"] = "frozen",
        finetune_last: int = 2,
        download: bool = False,
        model_args: dict | None = None,
    ):
        super().__init__()
        check_finetune(finetune, finetune_last)
        timm = import_extra("timm", "timm", f"model.encoder: timm's {name} (TimmEncoder)")
        if "." in name or not timm.is_model(name):
            raise ValueError(
                f"model.encoder.name={name!r} is not a timm model name (without a tag: the tag is model.encoder.weights); "
                f"timm.list_models() lists them, e.g. convnext_tiny or vit_small_patch16_224"
            )
        full = name
        if weights is not None:
            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{name}.*")]
            if weights not in tags:
                raise ValueError(f"model.encoder.weights={weights!r}: timm has no such weights for {name}; it offers {tags} "
                                 "or null (random init)")
            full = f"{name}.{weights}"
        cfg = timm.models.get_pretrained_cfg(full)  # the tag's, or the model's default tag's
        kwargs = dict(model_args or {})
        if image_size is not None and cfg is not None and cfg.fixed_input_size:
            kwargs["img_size"] = image_size  # a ViT's position embedding is made (or resampled) for it
        overlay = None
        if weights is not None and not download:
            source = _weight_source(cfg)
            path = source.cached_file()
            if path is None:
                raise missing_weights(f"model.encoder.weights={weights}", f"timm's {full}", source)
            overlay = {"file": path}
        model = timm.create_model(full, pretrained=weights is not None, pretrained_cfg_overlay=overlay, num_classes=0,
                                  **kwargs)
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(f"model.encoder.name={name!r}: timm's {name} has no forward_intermediates, so its last "
                             "feature map cannot be taken as a grid; choose another model (ConvNeXt, ViT, ResNet, ...)")
        model.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)
        data = model.pretrained_cfg
        self.body = model
        self.normalize = ModelInput(image_size or data["input_size"][-1], data["mean"], data["std"],
                                    data.get("interpolation", "bicubic"))
        self.measure_grid(grid, self.normalize.size, f"timm's {name}")
        self.freeze_stages(timm_stages(model), finetune, finetune_last)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)  # (B, 3, S, S)
        (feats,) = self.body.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)
        return self.pool(feats)  # (B, D, grid, grid)
