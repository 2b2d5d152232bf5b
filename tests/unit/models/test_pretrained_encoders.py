"""The timm and open_clip encoders (capgen.models.timm_encoder, clip_encoder): their grid, the
stages that train, the bf16 and channels_last settings, the feature cache's record of them, and
the two messages of an offline machine (a missing extra, a missing weight file). Small random
models throughout: timm's own test_* models, a CLIP ViT tower a few layers deep."""

from __future__ import annotations

import sys

import pytest
import torch

from capgen.data.cache import encoder_identity
from capgen.lightning import hardware
from capgen.models import AttentionDecoder, Captioner, ClipEncoder, TimmEncoder

IMAGES = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
TINY_CLIP = {"width": 32, "layers": 3, "head_width": 16, "patch_size": 8}
CPU_WITH_BF16 = "flags\t: avx2 avx512f avx512_bf16 amx_bf16"


def _vit(**kw) -> TimmEncoder:
    torch.manual_seed(0)
    return TimmEncoder("test_vit", image_size=32, **kw)  # 16-pixel patches: a 2x2 grid


def _clip(**kw) -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder("ViT-B-16", image_size=32, vision_cfg=TINY_CLIP, **kw)  # 8-pixel patches: 4x4


def _trainable(encoder) -> set[str]:
    return {n.removeprefix("body.") for n, p in encoder.named_parameters() if p.requires_grad}


# ----- the grid --------------------------------------------------------------------------------

def test_timm_vit_grid_is_its_patch_tokens_without_the_class_and_register_tokens():
    enc = _vit(model_args={"reg_tokens": 2})
    assert enc.body.num_prefix_tokens == 3  # a class token and two registers
    net = Captioner(enc, AttentionDecoder, vocab_size=11)
    feats = net.encode(IMAGES)
    assert feats.shape == (2, 4, 64) and (enc.grid, enc.out_dim) == (2, 64)  # P = grid * grid patches, D = width
    with torch.no_grad():
        tokens = enc.body.forward_features(enc.normalize(IMAGES))  # (B, 3 + 4, D), after the final norm
    torch.testing.assert_close(feats, tokens[:, 3:])
    _, alphas = net(IMAGES, torch.randint(0, 11, (2, 5)))
    assert alphas.shape == (2, 5, enc.grid * enc.grid)


def test_timm_convnext_grid_is_its_last_stage_pooled_to_grid():
    torch.manual_seed(0)
    native = TimmEncoder("test_convnext", image_size=64)
    assert native(IMAGES).shape == (2, native.out_dim, 2, 2) and native.grid == 2
    torch.manual_seed(0)
    pooled = TimmEncoder("test_convnext", image_size=64, grid=1)
    torch.testing.assert_close(pooled(IMAGES), native(IMAGES).mean((2, 3), keepdim=True))
    assert not any("head" in n for n, _ in native.named_parameters())  # the classifier is gone


def test_timm_input_is_resized_and_normalised_as_its_pretrained_config_says():
    enc = _vit()
    cfg = enc.body.pretrained_cfg
    assert enc.normalize.size == 32 and enc.normalize.interpolation == cfg["interpolation"] == "bicubic"
    x = enc.normalize(IMAGES)
    assert x.shape == (2, 3, 32, 32)
    white = enc.normalize(torch.full((1, 3, 48, 48), 255, dtype=torch.uint8))
    expected = (1 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])  # test_vit's: 0.5, 0.5
    torch.testing.assert_close(white[0, :, 0, 0], expected)
    assert TimmEncoder("test_convnext").normalize.size == cfg["input_size"][-1] == 160  # null: the config's size


def test_clip_grid_is_open_clips_output_tokens():
    """The grid is what open_clip itself returns as its tokens (output_tokens=True): the patch
    tokens after ln_post, without the class token, in row-major order."""
    enc = _clip()
    feats = Captioner(enc, AttentionDecoder, vocab_size=11).encode(IMAGES)
    assert feats.shape == (2, 16, 32) and (enc.grid, enc.out_dim) == (4, 32)
    enc.body.output_tokens = True
    with torch.no_grad():
        _, tokens = enc.body(enc.normalize(IMAGES))
    assert tokens.shape == (2, 16, 32)
    torch.testing.assert_close(feats, tokens)
    assert enc.body.proj is None  # the pooled embedding's projection is not kept
    clip_mean = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default preprocessing
    torch.testing.assert_close(enc.normalize.mean.flatten(), torch.tensor(clip_mean))


# ----- which weights train ---------------------------------------------------------------------

@pytest.mark.parametrize("finetune, last, trains", [
    ("frozen", 2, set()),
    ("last", 1, {"blocks.5", "norm"}),  # the final norm belongs to the last block
    ("last", 2, {"blocks.4", "blocks.5", "norm"}),
    ("all", 2, {"cls_token", "pos_embed", "patch_embed"} | {f"blocks.{k}" for k in range(6)} | {"norm"}),
])
def test_timm_finetune_trains_the_last_stages(finetune, last, trains):
    enc = _vit(finetune=finetune, finetune_last=last)
    assert {".".join(n.split(".")[:2]) if n.startswith("blocks") else n.split(".")[0] for n in _trainable(enc)} == trains
    assert enc.frozen == (finetune == "frozen")


def test_timm_frozen_stages_keep_batchnorm_statistics():
    torch.manual_seed(0)
    enc = TimmEncoder("test_resnet", image_size=64, finetune="last", finetune_last=1)
    assert {n.split(".")[0] for n in _trainable(enc)} == {"layer4"}
    before = enc.body.bn1.running_mean.clone()
    enc(IMAGES)  # as built, before any train() or eval(): the frozen stages are in eval mode already
    assert torch.equal(enc.body.bn1.running_mean, before)
    enc.train()
    assert not enc.body.bn1.training and not enc.body.layer3.training and enc.body.layer4.training
    enc(IMAGES)
    assert torch.equal(enc.body.bn1.running_mean, before)


@pytest.mark.parametrize("finetune, last, trains", [
    ("frozen", 2, set()),
    ("last", 1, {"transformer.resblocks.2", "ln_post"}),
    ("last", 2, {"transformer.resblocks.1", "transformer.resblocks.2", "ln_post"}),
    ("all", 2, {"conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post"}
     | {f"transformer.resblocks.{k}" for k in range(3)}),
])
def test_clip_finetune_trains_the_last_stages(finetune, last, trains):
    enc = _clip(finetune=finetune, finetune_last=last)
    names = {".".join(n.split(".")[:3]) if n.startswith("transformer") else n.split(".")[0] for n in _trainable(enc)}
    assert names == trains
    assert enc.frozen == (finetune == "frozen")


@pytest.mark.parametrize("name, tower, kind, last_stage", [
    ("ViT-B-16-SigLIP", {"timm_model_name": "test_vit"}, "TimmModel", {"trunk.blocks.5", "trunk.norm"}),
    ("RN50", {"width": 8, "layers": [1, 1, 1, 1]}, "ModifiedResNet", {"layer4"}),
])
def test_clip_towers_built_on_timm_or_a_resnet_give_their_last_map(name, tower, kind, last_stage):
    """SigLIP's tower is a timm ViT (its attention-pooling head removed); RN50's a ResNet (its attnpool removed)."""
    torch.manual_seed(0)
    enc = ClipEncoder(name, image_size=32, vision_cfg=tower, finetune="last", finetune_last=1)
    assert type(enc.body).__name__ == kind
    assert enc(IMAGES).shape == (2, enc.out_dim, enc.grid, enc.grid) and enc.grid == (2 if kind == "TimmModel" else 1)
    trained = {n for n in _trainable(enc)}
    assert {n for n in last_stage if any(t.startswith(n + ".") for t in trained)} == last_stage
    assert all(any(t.startswith(n + ".") for n in last_stage) for t in trained)
    assert not any("attn_pool" in n or "attnpool" in n or n.startswith("head.") for n, _ in enc.body.named_parameters())


@pytest.mark.parametrize("build", [_vit, _clip], ids=["timm", "clip"])
def test_bad_finetune_settings_are_refused(build):
    with pytest.raises(ValueError, match="model.encoder.finetune='some'"):
        build(finetune="some")
    with pytest.raises(ValueError, match="model.encoder.finetune_last=-1"):
        build(finetune="last", finetune_last=-1)


# ----- how they run: bf16, channels_last -------------------------------------------------------

@pytest.mark.parametrize("build", [_vit, _clip], ids=["timm", "clip"])
def test_frozen_encoder_runs_bf16_and_channels_last_as_configured(build, monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo(CPU_WITH_BF16))
    enc = build().eval()
    fp32 = enc(IMAGES)
    hardware.configure_encoder(enc, channels_last="true", device_type="cpu", precision="auto")
    patch_conv = enc.body.patch_embed.proj if hasattr(enc.body, "patch_embed") else enc.body.conv1
    assert enc.precision == torch.bfloat16 and patch_conv.weight.is_contiguous(memory_format=torch.channels_last)
    bf16 = enc(IMAGES)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # computed in bf16, handed on in fp32
    torch.testing.assert_close(bf16, fp32, rtol=0.1, atol=0.1)
    hardware.configure_encoder(enc, channels_last="true", device_type="cpu", precision="32")
    torch.testing.assert_close(enc(IMAGES), fp32, rtol=1e-4, atol=1e-4)  # channels_last: the same numbers


# ----- the feature cache's record ----------------------------------------------------------------

def test_feature_cache_identity_names_the_library_model_and_weights():
    timm_cfg = {"_target_": "capgen.models.TimmEncoder", "name": "convnext_tiny", "weights": "fb_in1k"}
    identity = encoder_identity(timm_cfg)
    assert identity["_target_"] == "capgen.models.timm_encoder.TimmEncoder"
    assert identity["name"] == "convnext_tiny" and identity["weights"] == "fb_in1k" and identity["image_size"] is None
    assert encoder_identity({**timm_cfg, "weights": "fb_in22k"}) != identity
    assert encoder_identity({**timm_cfg, "name": "convnext_small"}) != identity
    assert encoder_identity({**timm_cfg, "download": True}) == identity  # how a file is obtained, not what it is
    clip_cfg = {"_target_": "capgen.models.ClipEncoder", "name": "ViT-B-16", "weights": "openai"}
    assert encoder_identity({**clip_cfg, "weights": "laion2b_s34b_b88k"}) != encoder_identity(clip_cfg)


# ----- an offline machine ------------------------------------------------------------------------

@pytest.mark.parametrize("module, build, extra", [("timm", _vit, "timm"), ("open_clip", _clip, "clip")])
def test_a_missing_extra_is_one_paragraph_naming_the_pip_command(module, build, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ModuleNotFoundError) as err:
        build()
    message = str(err.value)
    assert f"pip install 'capgen[{extra}]'" in message and f"needs the {module} package" in message
    assert "\n" not in message


def _hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's ~/.cache/clip
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache


def _put_in_hf_cache(cache, repo: str, filename: str, save) -> None:
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    save(folder / "snapshots" / "abc123" / filename)


def test_timm_missing_weights_offline_name_the_file_and_where_it_goes(tmp_path, monkeypatch):
    cache = _hf_cache(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError) as err:
        _vit(weights="r160_in1k")
    message = str(err.value)
    assert message.startswith("model.encoder.weights=r160_in1k: the weight file of timm's test_vit.r160_in1k is not")
    assert "hf download timm/test_vit.r160_in1k model.safetensors" in message
    assert str(cache / "models--timm--test_vit.r160_in1k") in message
    assert "model.encoder.download=true" in message and "model.encoder.weights=null" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"timm has no such weights for test_vit; it offers \['r160_in1k'\]"):
        _vit(weights="nope")


def test_timm_reads_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """The real loading path: a file where the Hugging Face cache keeps it is used, no network."""
    import safetensors.torch
    import timm

    cache = _hf_cache(tmp_path, monkeypatch)
    torch.manual_seed(1)
    src = timm.create_model("test_vit")
    _put_in_hf_cache(cache, "timm/test_vit.r160_in1k", "model.safetensors",
                     lambda path: safetensors.torch.save_file(src.state_dict(), path))
    enc = _vit(weights="r160_in1k")
    torch.testing.assert_close(enc.body.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert enc.body.pos_embed.shape[1] == 1 + 4  # resampled for image_size=32 (the file's is 160: 1 + 100)


def test_clip_missing_weights_offline_name_the_file_and_where_it_goes(tmp_path, monkeypatch):
    cache = _hf_cache(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError) as err:
        ClipEncoder("ViT-B-16", weights="openai")
    message = str(err.value)
    assert message.startswith("model.encoder.weights=openai: the weight file of open_clip's ViT-B-16 (openai) is not")
    assert "hf download timm/vit_base_patch16_clip_224.openai open_clip_model.safetensors" in message
    assert str(cache / "models--timm--vit_base_patch16_clip_224.openai") in message
    assert str(tmp_path / "home" / ".cache" / "clip" / "ViT-B-16.pt") in message  # open_clip's other source
    assert "model.encoder.download=true" in message and "model.encoder.weights=null" in message and "\n" not in message
    with pytest.raises(ValueError, match="open_clip has no such weights for ViT-B-16; it offers"):
        ClipEncoder("ViT-B-16", weights="nope")


def test_clip_hands_open_clip_the_cached_file_and_its_tags_settings(tmp_path, monkeypatch):
    """A file in the Hugging Face cache goes to open_clip.create_model as a local file (so
    open_clip never goes to the network), with the settings the tag would have given: OpenAI's
    QuickGELU, mean and std."""
    import open_clip

    cache = _hf_cache(tmp_path, monkeypatch)
    _put_in_hf_cache(cache, "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors",
                     lambda path: path.write_bytes(b"weights"))
    given = {}

    class Stop(Exception):
        pass

    def create_model(name, **kw):
        given.update(kw, name=name)
        raise Stop

    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(Stop):
        ClipEncoder("ViT-B-16", weights="openai")
    assert given["pretrained"].endswith("snapshots/abc123/open_clip_model.safetensors")
    assert given["force_quick_gelu"] is True
    assert given["force_preprocess_cfg"]["std"] == open_clip.get_pretrained_cfg("ViT-B-16", "openai")["std"]


def test_the_commands_raise_the_encoders_own_errors_not_hydras_wrapper(tmp_path, monkeypatch):
    """Built from its config node (capgen-train, -eval, -caption, -prepare), an encoder's missing
    package or weight file reaches the user as its own one paragraph: Hydra used to wrap the
    first in an InstantiationException ("Error in call to target ..."), and capgen-prepare both."""
    from omegaconf import OmegaConf

    from capgen.commands.prepare import prepare
    from capgen.instantiate import instantiate

    from helpers.runs import SIZES, compose_command

    node = OmegaConf.create({"_target_": "capgen.models.TimmEncoder", "name": "test_vit"})
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "timm", None)
        with pytest.raises(ModuleNotFoundError, match=r"^model\.encoder: timm's test_vit \(TimmEncoder\) needs the timm"):
            instantiate(node)
    _hf_cache(tmp_path, monkeypatch)
    cfg = compose_command("prepare", f"cache_dir={tmp_path / 'cache'}", "features=true", SIZES, "model/encoder=timm",
                          "model.encoder.name=test_vit", "model.encoder.weights=r160_in1k")
    with pytest.raises(FileNotFoundError, match=r"^model\.encoder\.weights=r160_in1k: the weight file"):
        prepare(cfg)
