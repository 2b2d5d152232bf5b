"""capgen-prepare's caches: exact images, features, resuming, bad samples, the datamodule on them."""

import copy
import functools
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf.errors import MissingMandatoryValue

from capgen.commands.prepare import SPLITS, prepare
from capgen.config import CONF_DIR
from capgen.data import cache
from capgen.data.cache import (
    CachedFeatures,
    CachedImages,
    describe_source,
    save_vocab,
    write_feature_cache,
    write_image_cache,
)
from capgen.data.datamodule import CaptionDataModule
from capgen.data.encoder_weights import EncoderWeights, EncoderWeightsMismatch, weights_fingerprint
from capgen.data.images import FIX_UNREADABLE, BadSampleError, load_rgb
from capgen.data.shapes import ShapesSource
from capgen.models import AttentionDecoder, Captioner
from capgen.models.losses import caption_loss
from capgen.vocab import Vocabulary

from helpers.fixtures_real import make_custom, write_jpeg

SIZES = {"train": 40, "val": 12, "test": 12}
SHAPES = functools.partial(ShapesSource, sizes=SIZES, image_size=32)
ENCODER = {"_target_": "capgen.models.SmallCNN", "widths": [8, 8, 8, 16], "grid": 2}  # P=4, D=16


class BadAt(ShapesSource):
    """Shapes whose train image 5 cannot be read, like a truncated JPEG."""

    def image(self, i):
        if self.split == "train" and i == 5:
            raise ValueError("train/0005.jpg: image file is truncated")
        return super().image(i)


def _dm(cache_dir=None, factory=SHAPES, **kw) -> CaptionDataModule:
    return CaptionDataModule(source=factory, batch_size=8, max_len=24, cache_dir=cache_dir, **kw)


def _write_images(cache_dir, factory=SHAPES, splits=SPLITS, **kw) -> None:
    """What capgen-prepare does for the images, on any source factory."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    dm = _dm(factory=factory)
    save_vocab(cache_dir, dm.vocab, dm.vocab_recipe())
    for split in splits:
        src = dm.source(split)
        write_image_cache(src, cache_dir, split, describe_source(factory, split, src), **kw)


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return hydra.utils.instantiate(ENCODER).eval()


def _weights(encoder, owner="the test's encoder") -> EncoderWeights:
    """The model's encoder weights, as capgen-train and capgen-eval hand them to the datamodule."""
    return EncoderWeights(weights_fingerprint(encoder), owner, "Make the cache with its weights.")


def _write_features(cache_dir, encoder, splits=SPLITS, encoder_config=ENCODER, batch_size=16, **kw) -> None:
    for split in splits:
        write_feature_cache(cache_dir, split, encoder, encoder_config, batch_size=batch_size, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _prepare_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("prepare", overrides=["data.source.sizes={train:40,val:12,test:12}", "+data.source.image_size=32",
                                             *overrides])


# ----- image cache -------------------------------------------------------------------------

def test_image_cache_serves_the_raw_sources_images_ids_and_captions(tmp_path):
    _write_images(tmp_path)
    for split in SPLITS:
        raw, cached = SHAPES(split=split), CachedImages(tmp_path, split)
        assert len(cached) == len(raw)
        for i in range(len(raw)):
            image = cached.image(i)
            assert image.dtype == np.uint8 and image.tobytes() == raw.image(i).tobytes()
            assert cached.image_id(i) == raw.image_id(i) and cached.captions(i) == raw.captions(i)
    index = json.loads((tmp_path / "images_val.json").read_text())
    assert index["complete"] and index["shape"] == [12, 32, 32, 3] and index["version"] == cache.FORMAT_VERSION
    assert index["source"]["source"] == "capgen.data.shapes.ShapesSource" and index["bad"] == []


def test_datamodule_on_the_cache_yields_the_same_batches(tmp_path, caplog):
    _write_images(tmp_path)
    raw, cached = _dm(), _dm(tmp_path)
    assert isinstance(cached.source("train"), CachedImages) and cached.vocab == raw.vocab
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for a, b in zip(getattr(raw, loader)(), getattr(cached, loader)(), strict=True):
            for x, y in zip(a, b):
                assert torch.equal(x, y)
    assert cached.references("val") == raw.references("val")
    # DataLoader workers get the source pickled: without the mapped array, which they map themselves.
    train = pickle.loads(pickle.dumps(cached.source("train")))
    assert train._data is None and train.image(3).tobytes() == raw.source("train").image(3).tobytes()

    # A cache made from other data is not used: one log line, and the raw source instead.
    other = functools.partial(ShapesSource, sizes=SIZES, image_size=32, seed=1)
    with caplog.at_level(logging.INFO):
        assert isinstance(_dm(tmp_path, factory=other).source("val"), ShapesSource)
    assert "images_val.json was made with other settings: data.source.seed 0 then, 1 now)" in caplog.text
    assert "reading the raw source" in caplog.text


def test_missing_cache_falls_back_to_raw_files_with_a_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        dm = _dm(tmp_path)
        assert isinstance(dm.source("val"), ShapesSource) and dm.vocab == _dm().vocab
    assert "images_val.json does not exist" in caplog.text


# ----- feature cache -------------------------------------------------------------------------

def test_feature_rows_are_the_frozen_encoders_output(tmp_path):
    _write_images(tmp_path)
    encoder = _encoder()
    _write_features(tmp_path, encoder)
    raw, feats = SHAPES(split="val"), CachedFeatures(tmp_path, "val")
    images = torch.stack([torch.from_numpy(raw.image(i)).permute(2, 0, 1) for i in range(len(raw))])
    with torch.no_grad():
        expected = encoder(images).flatten(2).transpose(1, 2)  # (N, P, D)
    got = torch.from_numpy(np.stack([feats.image(i) for i in range(len(feats))]))
    assert got.dtype == torch.float16 and got.shape == (12, 4, 16)
    torch.testing.assert_close(got.float(), expected, rtol=2e-3, atol=2e-3)
    assert feats.encoder["grid"] == 2 and feats.encoder["_target_"] == "capgen.models.encoder.SmallCNN"


def test_training_on_features_matches_training_on_images(tmp_path):
    _write_images(tmp_path)
    encoder = _encoder()
    _write_features(tmp_path, encoder)
    on_images = _dm(tmp_path)
    on_feats = _dm(tmp_path, use_features=True, encoder=ENCODER, encoder_weights=_weights(encoder))
    a = next(iter(on_images.train_dataloader()))
    b = next(iter(on_feats.train_dataloader()))
    assert b.images.dtype == torch.float16 and b.images.shape == (8, 4, 16)
    assert torch.equal(a.captions, b.captions) and torch.equal(a.image_ids, b.image_ids)

    torch.manual_seed(0)
    decoder = functools.partial(AttentionDecoder, embed_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0)
    net = Captioner(encoder.requires_grad_(False), decoder, len(on_images.vocab))
    losses = {}
    for name, batch in (("images", a), ("features", b)):
        model = copy.deepcopy(net).train()
        model.encoder.eval()  # frozen: BatchNorm keeps the statistics the features were made with
        opt = torch.optim.AdamW(model.decoder.parameters(), lr=1e-2)
        losses[name] = []
        for _ in range(2):  # the loss of one step, and after it
            logits, _ = model(batch.images, batch.captions[:, :-1])
            loss = caption_loss(logits, batch.captions[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
        model.eval()
        assert model.generate(batch.images, 10, 1, 2).tokens.shape[0] == 8
    np.testing.assert_allclose(losses["features"], losses["images"], rtol=1e-3)


def test_feature_cache_of_another_encoder_is_refused(tmp_path):
    _write_images(tmp_path)
    _write_features(tmp_path, _encoder())
    dm = _dm(tmp_path, use_features=True, encoder={**ENCODER, "grid": 3}, encoder_weights=_weights(_encoder()))
    with pytest.raises(ValueError, match=r'features were made by encoder .*"grid": 2.* model\'s encoder is .*"grid": 3.*differ in grid'):
        dm.train_dataloader()
    # The same encoder, spelled with its defaults or another import path, is accepted.
    same = {"_target_": "capgen.models.encoder.SmallCNN", "widths": [8, 8, 8, 16], "grid": 2}
    _dm(tmp_path, use_features=True, encoder=same, encoder_weights=_weights(_encoder())).val_dataloader()


def test_the_weights_fingerprint_is_the_weights_not_their_layout(tmp_path):
    """Equal for equal weights however they are laid out or stored (channels_last, a state_dict
    copy, float64, bf16 as a bf16-true run keeps them); another initialisation, one changed
    number or BatchNorm's statistics change it."""
    encoder = _encoder()
    fingerprint = weights_fingerprint(encoder)
    assert len(fingerprint) == 64 and fingerprint == weights_fingerprint(_encoder())
    assert weights_fingerprint(copy.deepcopy(encoder).to(memory_format=torch.channels_last)) == fingerprint
    assert weights_fingerprint({k: v.clone() for k, v in encoder.state_dict().items()}) == fingerprint
    torch.manual_seed(1)
    assert weights_fingerprint(hydra.utils.instantiate(ENCODER)) != fingerprint  # another random initialisation
    assert weights_fingerprint(copy.deepcopy(encoder).double()) == fingerprint
    assert weights_fingerprint(copy.deepcopy(encoder).to(torch.bfloat16)) == fingerprint
    changed = {name: copy.deepcopy(encoder) for name in ("weight", "statistics")}
    with torch.no_grad():
        next(changed["weight"].parameters()).view(-1)[0] += 1e-2
    bn = next(m for m in changed["statistics"].modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean[0] += 1e-3
    assert len({fingerprint, *(weights_fingerprint(m) for m in changed.values())}) == 3
    _write_images(tmp_path)
    _write_features(tmp_path, encoder, splits=["val"])
    assert CachedFeatures(tmp_path, "val").encoder_weights == fingerprint  # what the cache records


def test_feature_cache_of_other_weights_of_the_same_encoder_is_refused(tmp_path, caplog):
    """The same encoder config with other weights (a checkpoint's trained small_cnn against
    capgen-prepare's random initialisation) is refused, naming the cache file and folder, the
    setting, whose weights and the fix; the weights that made it are accepted."""
    _write_images(tmp_path)
    _write_features(tmp_path, _encoder())
    assert json.loads((tmp_path / "features_val.json").read_text())["encoder_weights"] == weights_fingerprint(_encoder())
    torch.manual_seed(1)
    trained = _weights(hydra.utils.instantiate(ENCODER), owner="the checkpoint /runs/a/last.ckpt")
    dm = _dm(tmp_path, use_features=True, encoder=ENCODER, encoder_weights=trained)
    with pytest.raises(EncoderWeightsMismatch) as refused:
        dm.train_dataloader()
    message = str(refused.value)
    assert message.startswith(f"data.use_features=true with data.cache_dir={tmp_path}: the features in features_train.json "
                              "were made by capgen.models.encoder.SmallCNN with other weights than the checkpoint "
                              "/runs/a/last.ckpt (the same encoder config; weights sha256 ")
    assert message.endswith("Make the cache with its weights.") and "\n" not in message
    with pytest.raises(EncoderWeightsMismatch):
        dm.val_dataloader()
    with caplog.at_level(logging.WARNING):
        _dm(tmp_path, use_features=True, encoder=ENCODER, encoder_weights=_weights(_encoder())).val_dataloader()
    assert caplog.text == ""
    with pytest.raises(ValueError, match="must be checked against the model's encoder config and weights"):
        _dm(tmp_path, use_features=True, encoder=ENCODER).val_dataloader()  # no weights given: nothing to check


def _without_weights_record(cache_dir: Path, split: str) -> None:
    """The split's feature index as capgen wrote it before it recorded the encoder's weights."""
    path = cache_dir / f"features_{split}.json"
    index = json.loads(path.read_text())
    del index["encoder_weights"], index["checksum"]
    path.write_text(json.dumps(cache._signed(index)))


def test_a_feature_cache_written_before_weights_were_recorded_is_read_with_one_log_line(tmp_path, caplog):
    _write_images(tmp_path)
    _write_features(tmp_path, _encoder())
    for split in SPLITS:
        _without_weights_record(tmp_path, split)
    torch.manual_seed(1)  # other weights: nothing can tell
    dm = _dm(tmp_path, use_features=True, encoder=ENCODER, encoder_weights=_weights(hydra.utils.instantiate(ENCODER)))
    with caplog.at_level(logging.WARNING):
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            getattr(dm, loader)()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{tmp_path / 'features_train.json'} records no fingerprint of the encoder weights that made "
                           "its features") and "whether they are those of the test's encoder cannot be checked" in line

    # capgen-prepare makes such a cache again, and one made by other weights of the same encoder.
    with caplog.at_level(logging.INFO):
        _write_features(tmp_path, _encoder(), splits=["val"])
        assert "features_val.json: made again, written before capgen recorded its encoder's weights" in caplog.text
        torch.manual_seed(1)
        other = hydra.utils.instantiate(ENCODER).eval()
        _write_features(tmp_path, other, splits=["val"])
        assert "features_val.json: made again, made by other weights of this encoder" in caplog.text
    assert CachedFeatures(tmp_path, "val").encoder_weights == weights_fingerprint(other)


def test_use_features_without_a_feature_cache_is_an_error(tmp_path):
    _write_images(tmp_path)
    with pytest.raises(ValueError, match="features_train.json does not exist.*capgen-prepare .*features=true"):
        _dm(tmp_path, use_features=True, encoder=ENCODER, encoder_weights=_weights(_encoder())).train_dataloader()
    with pytest.raises(ValueError, match="use_features=true needs data.cache_dir"):
        _dm(use_features=True)


# ----- interruption, resuming, re-running ------------------------------------------------------

def _crash_at(monkeypatch, row: int) -> list[tuple[str, int]]:
    """Make ShapesSource.image raise KeyboardInterrupt (a Ctrl-C) at train `row`; returns the
    (split, row)s read."""
    read, image = [], ShapesSource.image

    def crashing(self, i):
        read.append((self.split, i))
        if (self.split, i) == ("train", row):
            raise KeyboardInterrupt
        return image(self, i)

    monkeypatch.setattr(ShapesSource, "image", crashing)
    return read


def test_interrupted_image_cache_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    _write_images(tmp_path / "clean")
    read = _crash_at(monkeypatch, 17)
    with pytest.raises(KeyboardInterrupt):
        _write_images(tmp_path / "run", splits=["train"], flush_every=4)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "images_train.u8.partial" in names and not {"images_train.u8", "images_train.json"} & names
    assert json.loads((tmp_path / "run" / "images_train.u8.progress.json").read_text())["rows_done"] == 17

    monkeypatch.undo()
    read = _crash_at(monkeypatch, -1)
    _write_images(tmp_path / "run")
    assert [i for s, i in read if s == "train"] == [0, *range(17, 40)]  # the shape probe, then the rest
    assert _files(tmp_path / "run") == _files(tmp_path / "clean")


def test_crash_between_rename_and_index_is_finished_without_rereading(tmp_path, monkeypatch):
    _write_images(tmp_path / "clean", splits=["val"])
    write_json = cache._write_json

    def crash_on_index(path, value):
        if path.name == "images_val.json":
            raise KeyboardInterrupt
        write_json(path, value)

    monkeypatch.setattr(cache, "_write_json", crash_on_index)
    with pytest.raises(KeyboardInterrupt):
        _write_images(tmp_path / "run", splits=["val"])
    assert (tmp_path / "run" / "images_val.u8").exists() and not (tmp_path / "run" / "images_val.json").exists()
    with pytest.raises(cache.CacheUnavailable, match="does not exist"):
        CachedImages(tmp_path / "run", "val")  # complete only with its index

    monkeypatch.undo()
    read = _crash_at(monkeypatch, -1)
    _write_images(tmp_path / "run", splits=["val"])
    assert read == [("val", 0)]  # the shape probe only
    assert _files(tmp_path / "run") == _files(tmp_path / "clean")


def test_interrupted_feature_cache_resumes_to_the_uninterrupted_result(tmp_path):
    _write_images(tmp_path / "clean")
    _write_features(tmp_path / "clean", _encoder())
    _write_images(tmp_path / "run")
    encoder, calls = _encoder(), []

    def count_batches(module, inputs):
        calls.append(len(inputs[0]))
        if len(calls) == 3:  # the width probe, then two batches of 16
            raise KeyboardInterrupt

    hook = encoder.register_forward_pre_hook(count_batches)
    with pytest.raises(KeyboardInterrupt):
        _write_features(tmp_path / "run", encoder, splits=["train"])
    assert json.loads((tmp_path / "run" / "features_train.f16.progress.json").read_text())["rows_done"] == 16
    assert not (tmp_path / "run" / "features_train.f16").exists()
    hook.remove()
    _write_features(tmp_path / "run", encoder)
    assert _files(tmp_path / "run") == _files(tmp_path / "clean")


def test_prepare_resumes_and_a_complete_prepare_changes_nothing(tmp_path, monkeypatch):
    cfg = _prepare_cfg(f"cache_dir={tmp_path / 'cache'}", "features=true", "+model.encoder.widths=[8,8,8,16]", "+model.encoder.grid=2")
    _crash_at(monkeypatch, 30)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    # vocab.json is written once the caches it goes with are complete: not beside a partial one.
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"images_train.u8.partial", "images_train.u8.progress.json"}
    monkeypatch.undo()
    assert prepare(cfg) == {"train": 0, "val": 0, "test": 0}
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    assert len(stamps) == 1 + 4 * len(SPLITS) and not any(".partial" in n or "progress" in n for n in stamps)

    read = _crash_at(monkeypatch, -1)
    prepare(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == stamps
    assert read == []  # nothing was even read

    torch.manual_seed(cfg.seed)  # as capgen-prepare builds it
    weights = _weights(hydra.utils.instantiate(cfg.model.encoder))
    dm = _dm(tmp_path / "cache", use_features=True, encoder=cfg.model.encoder, encoder_weights=weights)
    assert next(iter(dm.val_dataloader())).images.shape == (8, 4, 16)


def test_cache_dir_is_required():
    with pytest.raises(MissingMandatoryValue, match="cache_dir"):
        prepare(_prepare_cfg())


# ----- bad samples -------------------------------------------------------------------------

BAD = functools.partial(BadAt, sizes=SIZES, image_size=32)


def test_bad_image_stops_prepare_under_on_bad_sample_error(tmp_path):
    with pytest.raises(ValueError, match=r"train image 5 \(image id 5\): train/0005.jpg: image file is truncated.*on_bad_sample=skip"):
        _write_images(tmp_path, factory=BAD)
    assert not (tmp_path / "images_train.json").exists()


def test_bad_image_is_recorded_and_left_out_under_skip(tmp_path, caplog):
    _write_images(tmp_path, factory=BAD, on_bad_sample="skip")
    for split in SPLITS:
        cache.record_bad_images(tmp_path, split, json.loads((tmp_path / f"images_{split}.json").read_text()))
    record = json.loads((tmp_path / "bad_images.json").read_text())
    assert record == {"train": [{"image_id": 5, "error": "train/0005.jpg: image file is truncated"}]}
    rows = np.memmap(tmp_path / "images_train.u8", dtype=np.uint8, mode="r", shape=(40, 32, 32, 3))
    assert not rows[5].any()

    dm = _dm(tmp_path, factory=BAD)
    train = dm.source("train")
    assert len(train) == 39 and 5 not in {train.image_id(i) for i in range(len(train))}
    ids = torch.cat([b.image_ids for b in dm.train_dataloader()]).tolist()
    assert 5 not in ids and len(ids) == 32  # 39 images, drop_last with batches of 8
    assert train.image(5).tobytes() == ShapesSource("train", sizes=SIZES, image_size=32).image(6).tobytes()

    # Features keep the same rows out.
    _write_features(tmp_path, _encoder())
    feats = CachedFeatures(tmp_path, "train")
    assert len(feats) == 39 and not feats.rows[5].any()


class OwnVocab(ShapesSource):
    """Shapes with a vocabulary of their own, as the course file coco.pt brings."""

    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "circle", "square"], max_len=24)


def test_cached_split_keeps_the_sources_own_vocabulary(tmp_path):
    factory = functools.partial(OwnVocab, sizes=SIZES, image_size=32)
    _write_images(tmp_path, factory=factory)
    (tmp_path / "vocab.json").unlink()
    dm = _dm(tmp_path, factory=factory)
    assert isinstance(dm.source("train"), CachedImages) and dm.vocab is OwnVocab.vocabulary


def test_prepare_features_channels_last_equal_contiguous(tmp_path, caplog):
    """capgen-prepare runs the encoder in the memory format `channels_last` asks for (auto on the
    CPU: channels_last); the cached features are the same numbers either way (to float16)."""
    feats = {}
    for setting in ("true", "false"):
        cfg = _prepare_cfg(f"cache_dir={tmp_path / setting}", "features=true", f"channels_last={setting}",
                           "+model.encoder.widths=[8,8,8,16]", "+model.encoder.grid=2")
        with caplog.at_level(logging.INFO, logger="capgen.lightning.hardware"):
            prepare(cfg)
        assert f"encoder memory format: {'channels_last' if setting == 'true' else 'contiguous'}" in caplog.text
        caplog.clear()
        cached = CachedFeatures(tmp_path / setting, "val")
        feats[setting] = np.stack([cached.image(i) for i in range(len(cached))]).astype(np.float32)
    assert feats["true"].shape == (12, 4, 16)
    np.testing.assert_allclose(feats["true"], feats["false"], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="channels_last='sometimes'"):
        prepare(_prepare_cfg(f"cache_dir={tmp_path / 'bad'}", "features=true", "channels_last=sometimes"))
    assert not (tmp_path / "bad").exists()  # refused before anything is written


FROZEN = {"_target_": "capgen.models.TorchvisionEncoder", "name": "resnet18", "grid": 2}  # P=4, D=512


def _frozen(precision: torch.dtype | None) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = hydra.utils.instantiate(FROZEN)
    encoder.set_precision(precision)
    return encoder


def _rows(cache_dir, split="val") -> np.ndarray:
    feats = CachedFeatures(cache_dir, split)
    return np.stack([feats.image(i) for i in range(len(feats))]).astype(np.float32)  # (N, P, D)


def test_a_feature_cache_records_the_precision_its_encoder_computed_in(tmp_path, caplog):
    """bf16 and fp32 features of one frozen encoder are told apart by the index (and differ by
    bf16's rounding); a complete cache made in the other precision is kept, with one line (bf16
    features serve an fp32 run); an interrupted one is started over, so no cache mixes both."""
    for name, precision in (("fp32", None), ("bf16", torch.bfloat16)):
        _write_images(tmp_path / name, splits=["val"])
        _write_features(tmp_path / name, _frozen(precision), splits=["val"], encoder_config=FROZEN)
    assert CachedFeatures(tmp_path / "fp32", "val").precision == "float32"
    assert CachedFeatures(tmp_path / "bf16", "val").precision == "bfloat16"
    assert json.loads((tmp_path / "bf16" / "features_val.json").read_text())["encoder_precision"] == "bfloat16"
    fp32, bf16 = _rows(tmp_path / "fp32"), _rows(tmp_path / "bf16")
    relative = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    assert fp32.shape == (12, 4, 512) and 1e-3 < relative < 3e-2, relative

    kept = _files(tmp_path / "bf16")
    with caplog.at_level(logging.INFO, logger=cache.__name__):
        _write_features(tmp_path / "bf16", _frozen(torch.float32), splits=["val"], encoder_config=FROZEN)
    assert _files(tmp_path / "bf16") == kept
    assert "features_val.json: kept, its features computed in bfloat16 (this encoder computes in float32)" in caplog.text

    _write_images(tmp_path / "mixed", splits=["val"])
    encoder, calls = _frozen(torch.bfloat16), []

    def stop_after_a_batch(module, inputs):
        calls.append(len(inputs[0]))
        if len(calls) == 3:  # the width probe, then one batch of 8
            raise KeyboardInterrupt

    encoder.register_forward_pre_hook(stop_after_a_batch)
    with pytest.raises(KeyboardInterrupt):
        _write_features(tmp_path / "mixed", encoder, splits=["val"], encoder_config=FROZEN, batch_size=8)
    assert json.loads((tmp_path / "mixed" / "features_val.f16.progress.json").read_text())["rows_done"] == 8
    _write_features(tmp_path / "mixed", _frozen(None), splits=["val"], encoder_config=FROZEN)
    assert _files(tmp_path / "mixed") == _files(tmp_path / "fp32")  # started over in fp32, not resumed


def test_prepare_computes_a_frozen_encoders_features_in_bf16_where_native(tmp_path, monkeypatch, caplog):
    """capgen-prepare on a CPU with native bf16 (flags mocked): encoder_precision=auto runs a
    frozen backbone in bf16, 32 in fp32, and each cache says which; a bad value writes nothing."""
    from capgen.lightning import hardware

    monkeypatch.setattr(hardware, "_cpuinfo", lambda: hardware.parse_cpuinfo("flags\t: avx2 avx512f amx_bf16"))
    frozen = ("model/encoder=torchvision", "model.encoder.name=resnet18", "+model.encoder.grid=2")
    for setting, expected in (("auto", "bfloat16"), ("32", "float32")):
        with caplog.at_level(logging.INFO, logger=hardware.__name__):
            prepare(_prepare_cfg(f"cache_dir={tmp_path / setting}", "features=true", f"encoder_precision={setting}",
                                 *frozen))
        assert CachedFeatures(tmp_path / setting, "test").precision == expected
    assert "encoder precision: bf16 autocast (encoder_precision=auto, on cpu: the encoder is frozen" in caplog.text
    assert "encoder precision: fp32 (encoder_precision=32, on cpu: asked for)" in caplog.text
    with pytest.raises(ValueError, match="encoder_precision='fp16'"):
        prepare(_prepare_cfg(f"cache_dir={tmp_path / 'bad'}", "features=true", "encoder_precision=fp16"))
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_split_read_from_a_cache_is_one_log_line(make_cfg, tmp_path, monkeypatch, caplog):
    import hydra

    from capgen.data import datamodule

    class Cache:  # stands in for a usable capgen-prepare cache (the tests above test the real one)
        def __init__(self, folder, split, description, vocabulary, source):
            self.split, self.files_checked = split, True

        def __len__(self) -> int:
            return 5

    monkeypatch.setattr(datamodule, "CachedImages", Cache)
    cfg = make_cfg(f"data.cache_dir={tmp_path / 'cache'}")
    data = hydra.utils.instantiate(cfg.data)
    with caplog.at_level(logging.INFO, logger="capgen.data.datamodule"):
        data.source("val")
        data.source("val")
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"the val split: 5 images from the cache in {tmp_path / 'cache'}"]


# ----- artifacts that no longer match what they claim to be ------------------------------
class _Pictures:
    """A source of n 16x16 pictures, each filled with its own grey value."""

    def __init__(self, n: int = 20):
        self.n = n

    def __len__(self):
        return self.n

    def image(self, i):
        import numpy as np

        return np.full((16, 16, 3), 10 + i, np.uint8)

    def image_id(self, i):
        return 100 + i

    def captions(self, i):
        return [f"picture {i}"]


def _zero(path, start=0, length=None):
    data = bytearray(path.read_bytes())
    stop = len(data) if length is None else start + length
    data[start:stop] = bytes(stop - start)
    path.write_bytes(bytes(data))


def _edit_json(path, change):
    import json

    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


DAMAGES = [
    # (what is done to the cache, the file the error must name)
    ("images zeroed", lambda d: _zero(d / "images_train.u8"), "images_train.u8"),
    ("the first half zeroed", lambda d: _zero(d / "images_train.u8", 0, 10 * 16 * 16 * 3), "images_train.u8"),
    ("a caption edited", lambda d: _edit_json(d / "images_train.json", lambda v: v["captions"][3].__setitem__(0, "a dog")),
     "images_train.json"),
    ("an id edited", lambda d: _edit_json(d / "images_train.json", lambda v: v["image_ids"].__setitem__(0, 7)),
     "images_train.json"),
    ("a word of vocab.json edited", lambda d: _edit_json(d / "vocab.json", lambda v: v["words"].__setitem__(5, "cat")),
     "vocab.json"),
    ("vocab.json's max_len edited", lambda d: _edit_json(d / "vocab.json", lambda v: v.__setitem__("max_len", 3)),
     "vocab.json"),
]


@pytest.mark.parametrize("what, damage, named", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_cache_changed_after_capgen_prepare_wrote_it_is_refused_naming_the_file_and_the_rebuild(tmp_path, what, damage, named):
    import numpy as np

    from capgen.data import cache
    from capgen.vocab import Vocabulary

    source, description = _Pictures(), {"source": "pictures", "split": "train"}
    vocab = Vocabulary.build([c for i in range(len(source)) for c in source.captions(i)])
    recipe = {"source": description, "min_freq": 1, "max_len": 20}
    cache.save_vocab(tmp_path, vocab, recipe)
    cache.write_image_cache(source, tmp_path, "train", description)
    assert np.array_equal(cache.CachedImages(tmp_path, "train", description).image(3), source.image(3))
    assert cache.load_vocab(tmp_path, recipe) == vocab
    damage(tmp_path)
    with pytest.raises(cache.CacheDamaged) as err:
        cache.load_vocab(tmp_path, recipe)
        cache.CachedImages(tmp_path, "train", description)
    message = str(err.value)
    assert message.startswith(str(tmp_path / named)) and f"capgen-prepare data=<this data config> cache_dir={tmp_path}" in message
    # capgen-prepare, the fix the message gives, rebuilds what no longer matches
    cache.save_vocab(tmp_path, vocab, recipe)
    cache.write_image_cache(source, tmp_path, "train", description)
    assert cache.load_vocab(tmp_path, recipe) == vocab
    assert np.array_equal(cache.CachedImages(tmp_path, "train", description).image(3), source.image(3))


def test_capgen_prepare_on_a_full_disk_reserves_the_space_first_and_says_how_much_is_needed(tmp_path, monkeypatch):
    import errno
    import os

    from capgen.data import cache

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # a test cannot fill a disk; the call is what a full one answers
    with pytest.raises(ValueError, match=r"the cache file images_train\.u8\.partial needs 0\.00 GB and the disk has .* GB "
                                         r"free \(No space left on device\); free .* or give a cache_dir= on a larger disk"):
        cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})
    assert not (tmp_path / "images_train.u8.partial").exists() and not (tmp_path / "images_train.u8").exists()
    monkeypatch.undo()
    cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})  # with room, it is written


def test_the_cache_file_is_allocated_on_disk_before_rows_are_written(tmp_path, monkeypatch):
    import os

    from capgen.data import cache

    reserved = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, n: (reserved.append(n), real(fd, off, n)))
    cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})
    assert reserved == [20 * 16 * 16 * 3]


class _OneBad(_Pictures):
    """Picture 4 unreadable until `fixed`."""

    fixed = False

    def image(self, i):
        if i == 4 and not self.fixed:
            raise ValueError("pictures/4.png: image file is truncated")
        return super().image(i)


def test_bad_images_are_read_again_by_capgen_prepare_after_the_user_fixes_them(tmp_path):
    import json

    import numpy as np

    from capgen.data import cache

    source, description = _OneBad(), {"source": "pictures", "split": "train"}
    index = cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")
    cache.record_bad_images(tmp_path, "train", index)
    assert [b["image_id"] for b in json.loads((tmp_path / "bad_images.json").read_text())["train"]] == [104]
    assert len(cache.CachedImages(tmp_path, "train", description)) == 19
    cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")  # still bad: kept out
    assert len(cache.CachedImages(tmp_path, "train", description)) == 19

    source.fixed = True  # the user puts a good file in its place and runs capgen-prepare again
    index = cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")
    cache.record_bad_images(tmp_path, "train", index)
    assert not (tmp_path / "bad_images.json").exists() or "train" not in json.loads((tmp_path / "bad_images.json").read_text())
    fixed = cache.CachedImages(tmp_path, "train", description)  # its checksums match the rewritten file
    assert len(fixed) == 20 and np.array_equal(fixed.image(4), source.image(4))


class Unreadable(ShapesSource):
    """Shapes whose every image is an empty file, as a failed copy leaves them."""

    def image(self, i):
        raise BadSampleError(f"{self.split}/{i:04d}.jpg", "empty file (0 bytes)", FIX_UNREADABLE)


def test_a_split_none_of_whose_images_reads_names_the_first_and_an_empty_split_says_it_is_empty(tmp_path):
    factory = functools.partial(Unreadable, sizes={"train": 4, "val": 0}, image_size=32)
    src = factory(split="train")
    with pytest.raises(ValueError, match=r"^the train split: none of its 4 images could be read, so there is nothing to "
                                         r"cache; the first: train/0000\.jpg: empty file \(0 bytes\)$") as err:
        write_image_cache(src, tmp_path, "train", describe_source(factory, "train", src), on_bad_sample="skip")
    assert "capgen-prepare" not in str(err.value)  # the training fix the source carries: prepare is what is running
    empty = factory(split="val")
    with pytest.raises(ValueError, match=r"^the val split has no images \(its captions or annotation file gives none "
                                         r"that split\), so there is nothing to cache$"):
        write_image_cache(empty, tmp_path, "val", describe_source(factory, "val", empty))


# ----- a cache follows the data it was made from -----------------------------------------------

def _custom(tmp_path, *overrides):
    """A make_custom data set (12 images: train 6, val 3, test 3) and capgen-prepare's config for
    it, caching into tmp_path/cache. Returns (facts, cfg)."""
    facts = make_custom(tmp_path / "data")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=["data=custom", f"data.root={tmp_path / 'data'}", "data.source.image_dir=images",
                                            "data.source.image_size=24", "data.num_workers=0",
                                            f"cache_dir={tmp_path / 'cache'}", *overrides])
    return facts, cfg


def _reading(cfg, **kw) -> CaptionDataModule:
    """The datamodule capgen-train builds on the cache."""
    return hydra.utils.instantiate(cfg.data, cache_dir=cfg.cache_dir, **kw)


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _rewritten(before: dict[str, int], folder: Path) -> set[str]:
    return {name for name, stamp in _stamps(folder).items() if before.get(name) != stamp}


def _replace_image(path: Path, seed: int) -> None:
    """Another picture in the file, as a user replacing an image does; its modification time
    moved on by a second as well, as a file system with coarse timestamps would not promise."""
    before = path.stat().st_mtime_ns
    write_jpeg(path, seed=seed)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_cache_of_captions_edited_since_is_not_used_and_prepare_rebuilds_that_split_and_vocab(tmp_path, caplog):
    facts, cfg = _custom(tmp_path)
    cache_dir = tmp_path / "cache"
    prepare(cfg)
    before = _stamps(cache_dir)
    file = facts["splits"]["train"][1]
    old = facts["captions"][file][0]
    rows = [json.loads(line) for line in facts["captions_file"].read_text().splitlines()]
    for row in rows:
        if row["file"] == file and row["caption"] == old:
            row["caption"] = "A crimson kayak beside the pier"  # words no other caption has
    facts["captions_file"].write_text("".join(json.dumps(r) + "\n" for r in rows))

    # Training on the cache reads the train split raw, says so with the fix, and counts the new words.
    dm = _reading(cfg)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        train = dm.source("train")
        assert [type(dm.source(s)) for s in ("val", "test")] == [CachedImages, CachedImages]
        vocab = dm.vocab
    assert not isinstance(train, CachedImages)
    assert dm.references("train")[facts["ids"][file]][0] == "A crimson kayak beside the pier"
    assert {"crimson", "kayak"} <= set(vocab.stoi)  # not vocab.json's, counted before the edit
    [line] = [r.getMessage() for r in caplog.records if "no usable image cache" in r.getMessage()]
    assert (f"{cache_dir / 'images_train.json'} holds other captions or image ids than the data has now for 1 of its 6 "
            f"images, image id {facts['ids'][file]}: the captions file changed" in line)
    assert line.endswith(f"reading the raw source; capgen-prepare data=<this data config> cache_dir={cache_dir} writes "
                         "or rebuilds it")
    assert "vocab.json was counted from other captions of the train split" in caplog.text

    # capgen-prepare rebuilds that split (and vocab.json from its captions), nothing else.
    prepare(cfg)
    assert _rewritten(before, cache_dir) == {"images_train.u8", "images_train.json", "vocab.json"}
    caplog.clear()
    dm = _reading(cfg)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        assert all(isinstance(dm.source(s), CachedImages) for s in SPLITS)
        assert dm.vocab == cache.load_vocab(cache_dir, dm.vocab_recipe()) and "kayak" in dm.vocab.stoi
    assert "no usable" not in caplog.text and "vocabulary is built from the train split" not in caplog.text
    assert dm.references("train")[facts["ids"][file]][0] == "A crimson kayak beside the pier"


def test_a_cache_of_an_image_file_replaced_since_is_not_used_and_prepare_rebuilds_that_split(tmp_path, caplog):
    facts, cfg = _custom(tmp_path, "features=true", "+model.encoder.widths=[8,8,8,16]", "+model.encoder.grid=2")
    cache_dir = tmp_path / "cache"
    prepare(cfg)
    before = _stamps(cache_dir)
    file = facts["splits"]["val"][2]
    _replace_image(facts["paths"][file], seed=999)
    new = load_rgb(facts["paths"][file], 24)

    dm = _reading(cfg)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        val = dm.source("val")
    assert not isinstance(val, CachedImages) and np.array_equal(val.image(2), new)
    [line] = [r.getMessage() for r in caplog.records if "no usable image cache" in r.getMessage()]
    assert (f"{cache_dir / 'images_val.json'}: 1 of the 3 image files it was made from changed since capgen-prepare "
            f"made the cache, their size or modification time: {facts['paths'][file]}" in line)
    assert f"capgen-prepare data=<this data config> cache_dir={cache_dir} writes or rebuilds it" in line
    # Its features were made from the old picture too: refused, naming the file and the command.
    torch.manual_seed(cfg.seed)  # as capgen-prepare builds the encoder
    encoder = hydra.utils.instantiate(cfg.model.encoder)
    features = _reading(cfg, use_features=True, encoder=cfg.model.encoder, encoder_weights=_weights(encoder))
    with pytest.raises(ValueError, match=r"features_val\.json: 1 of the 3 image files it was made from changed .*"
                                         r"capgen-prepare data=<this data config> cache_dir=.* features=true"):
        features.source("val")

    prepare(cfg)
    assert _rewritten(before, cache_dir) == {"images_val.u8", "images_val.json", "features_val.f16", "features_val.json"}
    dm = _reading(cfg)
    assert all(isinstance(dm.source(s), CachedImages) for s in SPLITS)
    assert np.array_equal(dm.source("val").image(2), new)
    features = _reading(cfg, use_features=True, encoder=cfg.model.encoder, encoder_weights=_weights(encoder))
    with torch.inference_mode():
        made = encoder.eval()(torch.from_numpy(new).permute(2, 0, 1)[None]).flatten(2).transpose(1, 2)[0]  # (P, D)
    assert torch.allclose(torch.from_numpy(np.array(features.source("val").image(2))).float(), made, atol=1e-2)


def test_an_unchanged_data_set_keeps_its_cache_also_touched_or_restored_with_its_times(tmp_path, caplog):
    facts, cfg = _custom(tmp_path)
    cache_dir, data = tmp_path / "cache", tmp_path / "data"
    prepare(cfg)
    before = _stamps(cache_dir)
    facts["captions_file"].touch()  # the captions are compared, not the file's time: the same captions keep the cache
    # Restored in place from a copy that kept the files' times (cp -a, rsync -a): nothing a stat sees has changed.
    shutil.copytree(data, tmp_path / "backup")
    shutil.rmtree(data)
    shutil.copytree(tmp_path / "backup", data)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        dm = _reading(cfg)
        assert all(isinstance(dm.source(s), CachedImages) for s in SPLITS)
        assert dm.vocab == cache.load_vocab(cache_dir, dm.vocab_recipe())  # vocab.json's
    assert "no usable" not in caplog.text and "vocabulary is built from the train split" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    prepare(cfg)
    assert _rewritten(before, cache_dir) == set()

    # A copy without the times (cp -r) looks like files rewritten since, which a stat cannot tell
    # apart from an edit of the same size: the cache is not used, and prepare rebuilds it.
    for path in facts["paths"].values():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert not isinstance(_reading(cfg).source("test"), CachedImages)


def test_a_cache_written_before_the_image_files_record_is_read_with_one_warning(tmp_path, caplog):
    facts, cfg = _custom(tmp_path)
    cache_dir = tmp_path / "cache"
    prepare(cfg)
    for split in SPLITS:  # as capgen wrote them before it recorded the image files
        path = cache.index_path(cache_dir, "images", split)
        index = json.loads(path.read_text())
        index.pop("image_files", None), index.pop("checksum")
        path.write_text(json.dumps(cache._signed(index)))
    vocab = json.loads((cache_dir / "vocab.json").read_text())
    vocab["built_from"].pop("captions", None), vocab.pop("checksum")
    (cache_dir / "vocab.json").write_text(json.dumps(cache._signed(vocab)))
    before = _stamps(cache_dir)

    dm = _reading(cfg)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        assert all(isinstance(dm.source(s), CachedImages) for s in SPLITS)
        assert dm.vocab == cache.load_vocab(cache_dir, dm.vocab_recipe())  # its vocab.json serves as before
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning == (
        f"{cache_dir / 'images_train.json'} records no state of the image files it was made from (written before capgen "
        "recorded it), so whether images were replaced since cannot be checked (its captions are; other splits' caches "
        f"so old are not said again); capgen-prepare data=<this data config> cache_dir={cache_dir} rebuilds them with "
        "the record")
    assert "vocabulary is built from the train split" not in caplog.text

    prepare(cfg)  # rebuilds them with the record
    assert _rewritten(before, cache_dir) == {f"images_{s}.{e}" for s in SPLITS for e in ("u8", "json")} | {"vocab.json"}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert all(isinstance(_reading(cfg).source(s), CachedImages) for s in SPLITS)
    assert caplog.records == []


def test_a_bad_image_fixed_since_is_added_by_prepare_and_the_cache_stays_usable(tmp_path):
    facts, cfg = _custom(tmp_path, "data.on_bad_sample=skip")
    file = facts["splits"]["train"][0]
    good = facts["paths"][file].read_bytes()
    facts["paths"][file].write_bytes(good[: len(good) // 2])  # truncated
    prepare(cfg)
    assert len(_reading(cfg).source("train")) == 5
    facts["paths"][file].write_bytes(good)  # the user puts the file back
    prepare(cfg)  # reads it again and adds its row, recording the file as it is now
    train = _reading(cfg).source("train")
    assert isinstance(train, CachedImages) and len(train) == 6
    assert np.array_equal(train.image(0), load_rgb(facts["paths"][file], 24))


def test_a_vocab_json_of_other_settings_names_only_the_settings_that_differ_both_values_and_the_fix(tmp_path, caplog):
    facts, cfg = _custom(tmp_path)
    cache_dir = tmp_path / "cache"
    prepare(cfg)
    args = ["data=custom", f"data.root={tmp_path / 'data'}", "data.source.image_dir=images", "data.source.image_size=32",
            "data.min_freq=2"]
    cfg.data.source.image_size, cfg.data.min_freq = 32, 2
    dm = _reading(cfg, prepare_args=args)
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        assert len(dm.vocab) > 4  # counted from the train split
    [line] = [r.getMessage() for r in caplog.records if "vocab.json" in r.getMessage()]
    assert line == (
        f"{cache_dir / 'vocab.json'} was built with other settings: data.min_freq 1 then, 2 now; data.source.image_size "
        "24 then, 32 now. The vocabulary is built from the train split instead; capgen-prepare data=custom "
        f"data.root={tmp_path / 'data'} data.source.image_dir=images data.source.image_size=32 data.min_freq=2 "
        f"cache_dir={cache_dir} writes a vocab.json for these settings")
    # The image caches of another image size: that one setting, both values.
    [line] = [r.getMessage() for r in caplog.records if "no usable image cache for the train split" in r.getMessage()]
    assert (f"({cache_dir / 'images_train.json'} was made with other settings: data.source.image_size 24 then, 32 now): "
            "reading the raw source" in line)


def test_setting_changes_names_each_differing_setting_as_given_with_both_values():
    from capgen.data.changes import setting_changes

    source = {"source": "capgen.data.custom.CustomSource", "split": "train", "size": 40,
              "args": {"root": "/data/pets", "on_bad_sample": "error", "image_size": 256, "split_fractions": None,
                       "captions": "captions.csv"}}
    other = {**source, "size": 42, "args": {**source["args"], "root": "/data/pets2", "on_bad_sample": "skip",
                                              "split_fractions": {"train": 0.8, "val": 0.2}}}
    assert setting_changes(source, source) == ""
    assert setting_changes(source, other) == (
        "data.on_bad_sample error then, skip now; data.root /data/pets then, /data/pets2 now; "
        'data.source.split_fractions null then, {"train": 0.8, "val": 0.2} now; the split\'s image count 40 then, 42 now')
    recipe = {"source": source, "captions": "abc", "min_freq": 1, "max_len": 16}
    assert setting_changes(recipe, {**recipe, "max_len": 20, "source": {**source, "args": {**source["args"], "x": 1}}}) \
        == "data.max_len 16 then, 20 now; data.source.x unset then, 1 now"


def test_a_vocab_json_that_records_no_settings_says_so_in_a_few_words(tmp_path):
    from capgen.vocab import Vocabulary

    recipe = {"source": {"source": "pictures", "split": "train", "size": 8, "args": {"image_size": 24}}, "min_freq": 1,
              "max_len": 20}
    cache.save_vocab(tmp_path, Vocabulary.build(["a red circle"]), {})  # as an earlier capgen wrote it: no built_from
    with pytest.raises(cache.CacheStale, match=r"^\S+vocab\.json records no settings it was built with \(an earlier capgen "
                                         r"wrote it\)$"):
        cache.load_vocab(tmp_path, recipe)
