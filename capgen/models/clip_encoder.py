"""open_clip's image tower as an encoder (`model/encoder=clip`, extra `[clip]`).

The tower is the CLIP model's `visual`; the text tower is dropped once the weights are loaded.
Its grid is the tower's own `forward_intermediates` output of the last block: for a ViT the
patch tokens after the final norm (`ln_post`), the class token dropped, laid out as the h x w
patches they came from. These are the tokens open_clip returns with `output_tokens=True`
(tested), without the pooled embedding and its projection, which the features do not use and
so are removed (`prune_intermediate_layers`). Towers built on timm (SigLIP, ConvNeXt CLIPs) give
their trunk's last map the same way, and the ResNet CLIPs (RN50, ...) their layer4 map.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from .encoder import ModelInput, StagedEncoder, check_finetune
from .pretrained import WeightSource, import_extra, missing_weights
from .timm_encoder import timm_stages

# With random weights (weights=null) the text tower is never used, so the smallest one is built.
_TINY_TEXT = {"context_length": 2, "vocab_size": 2, "width": 8, "heads": 1, "layers": 1}


def _weight_source(tag_cfg: dict) -> WeightSource:
    """Where open_clip's download_pretrained would fetch a tag's file (prefer_hf_hub=True)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo = names = None
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe = (HF_SAFE_WEIGHTS_NAME,) if filename == HF_WEIGHTS_NAME else \
            (filename[:-4] + ".safetensors",) if filename.endswith((".bin", ".pth")) else ()
        names = (*safe, filename)
    url = tag_cfg.get("url") or None
    return WeightSource(repo=repo, filenames=names or (), url=url,
                        url_cache=os.path.expanduser("~/.cache/clip") if url else None)


def clip_stages(visual: nn.Module) -> list[list[nn.Module | nn.Parameter]]:
    """The tower's stages, input to output, as its own lock(unlocked_groups) counts them: a ViT's
    patch embedding (with the class and position embeddings), then one per block, the final norm
    with the last; a timm trunk's timm_stages; a ResNet's stem, then layer1 ... layer4."""
    if hasattr(visual, "transformer"):
        blocks = list(visual.transformer.resblocks)
        return [[visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre],
                *[[b] for b in blocks[:-1]], [blocks[-1], visual.ln_post]]
    if hasattr(visual, "trunk"):
        return timm_stages(visual.trunk)
    stem = [visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3, visual.bn3]
    return [stem, [visual.layer1], [visual.layer2], [visual.layer3], [visual.layer4]]


def _prune(visual: nn.Module) -> bool:
    """Remove what the grid does not use (the pooling and projection heads); True if the last
    block's output is to be normalised by the tower's final norm."""
    if hasattr(visual, "transformer"):
        attn_pool = getattr(visual, "attn_pool", None) is not None
        if attn_pool:  # CoCa: its ln_post is sized for the pooler's queries, not the tokens
            visual.attn_pool = visual.attn_pool_contrastive = None
        visual.prune_intermediate_layers(indices=1, prune_norm=attn_pool, prune_head=True)
        return not attn_pool
    if hasattr(visual, "trunk"):
        visual.trunk.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)
        visual.head = nn.Identity()
        return True
    visual.attnpool = nn.Identity()
    return False


class ClipEncoder(StagedEncoder):
    """open_clip model `name`'s image tower -> (B, D, grid, grid).

    weights: a pretrained tag of the model (`open_clip.list_pretrained_tags_by_model(name)`, e.g.
    openai), read from the Hugging Face cache (or ~/.cache/clip for files hosted elsewhere);
    None: random init. Images are resized to the tower's image size (`image_size`, None: the
    model config's, 224 for ViT-B-16) and normalised with the tag's mean and std.
    grid: the side the map is average-pooled to; None: the tower's own (ViT-B-16 at 224: 14).
    finetune, finetune_last: as StagedEncoder says; the stages are clip_stages'.
    download: let open_clip download missing weights (else a missing file is an error naming it).
    vision_cfg: entries that replace the model config's vision_cfg (e.g. a smaller tower).
    """

    def __init__(
        self,
        name: str = "ViT-B-16",
        weights: str | None = None,
        grid: int | None = None,
        image_size: int | None = None,
        finetune: Literal["frozen", "last", "all"] = "frozen",
        finetune_last: int = 2,
        download: bool = False,
        vision_cfg: dict | None = None,
    ):
        super().__init__()
        check_finetune(finetune, finetune_last)
        open_clip = import_extra("open_clip", "clip", f"model.encoder: open_clip's {name} (ClipEncoder)")
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(f"model.encoder.name={name!r} is not an open_clip model; open_clip.list_models() lists them, "
                             "e.g. ViT-B-16 or ViT-L-14")
        kwargs = {}
        if vision_cfg:  # replaces the model config's vision_cfg, force_image_size's change included
            kwargs["vision_cfg"] = {**model_cfg["vision_cfg"], **vision_cfg,
                                    **({"image_size": image_size} if image_size else {})}
        tag_cfg, pretrained = {}, None
        if weights is None:
            if "multimodal_cfg" not in model_cfg:
                kwargs["text_cfg"] = _TINY_TEXT
        else:
            tag_cfg = open_clip.get_pretrained_cfg(name, weights)
            if not tag_cfg:
                raise ValueError(f"model.encoder.weights={weights!r}: open_clip has no such weights for {name}; it offers "
                                 f"{open_clip.list_pretrained_tags_by_model(name)} or null (random init)")
            pretrained = weights
            if not download:
                source = _weight_source(tag_cfg)
                pretrained = source.cached_file()
                if pretrained is None:
                    raise missing_weights(f"model.encoder.weights={weights}", f"open_clip's {name} ({weights})", source)
        model = open_clip.create_model(
            name, pretrained=pretrained, force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_image_size=image_size, force_preprocess_cfg={k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg},
            **kwargs,
        )
        visual = model.visual  # the text tower goes with `model`
        if not hasattr(visual, "forward_intermediates"):
            raise ValueError(f"model.encoder.name={name!r}: open_clip's {name} image tower has no forward_intermediates, "
                             "so its last feature map cannot be taken as a grid; choose a ViT CLIP such as ViT-B-16")
        self.norm_tokens = _prune(visual)
        stages = clip_stages(visual)
        pre = visual.preprocess_cfg
        size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
        self.body = visual
        self.normalize = ModelInput(size, pre["mean"], pre["std"], pre.get("interpolation", "bicubic"))
        self.measure_grid(grid, size, f"open_clip's {name}")
        self.freeze_stages(stages, finetune, finetune_last)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)  # (B, 3, S, S)
        out = self.body.forward_intermediates(x, indices=1, normalize_intermediates=self.norm_tokens,
                                              intermediates_only=True, output_fmt="NCHW")
        return self.pool(out["image_intermediates"][-1])  # (B, D, grid, grid)
