"""Writing a data config's caches (capgen.data.cache) into `cache_dir` (capgen-prepare)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from ..config.checks import check_numbers, check_types, check_values
from ..data.cache import describe_source, record_bad_images, save_vocab, write_feature_cache, write_image_cache
from ..data.encoder_weights import weights_fingerprint
from ..instantiate import instantiate
from ..lightning.hardware import configure_encoder, encoder_settings
from .failure import one_paragraph_on_failure

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def prepare(cfg: DictConfig) -> dict[str, int]:
    """Write (or finish, or keep) every cache; returns the number of bad images per split."""
    check_numbers(cfg)  # before anything is written
    check_values(cfg, {"features": bool, "feature_batch_size": int})
    if cfg.feature_batch_size < 1:
        raise ValueError(f"feature_batch_size={cfg.feature_batch_size}: give a positive whole number, e.g. 64")
    check_types(cfg.data, "data")
    encoder_run = encoder_settings(cfg)  # a bad value stops before any cache is written
    cache_dir = cache_folder(cfg.cache_dir)
    on_bad_sample = cfg.data.get("on_bad_sample") or "error"
    # The raw sources: this datamodule must not read from the caches it is writing.
    datamodule = hydra.utils.instantiate(cfg.data, cache_dir=None, use_features=False)
    empty = _empty_splits(datamodule, on_bad_sample)

    encoder, weights = None, None
    if cfg.features:
        torch.manual_seed(cfg.seed)  # repeatable features from a randomly initialised encoder
        encoder = instantiate(cfg.model.encoder)  # its own error (a missing weight file, package) as it is
        if any(p.requires_grad for p in encoder.parameters()):
            log.warning(
                "model.encoder (%s) has weights that training would update; its features are cached "
                "from the weights it has now (drawn with seed=%s if not pretrained), and training on them leaves it "
                "as it is. Runs read them only with these very weights (train with the same model.encoder settings "
                "and seed=%s); a checkpoint whose encoder trained on images is refused on them",
                cfg.model.encoder._target_, cfg.seed, cfg.seed,
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # bf16 for a frozen encoder where the device computes it natively (encoder_precision=auto);
        # the feature cache records the precision its features were computed in.
        configure_encoder(encoder, device_type=device, **encoder_run)
        # Once for every split: each feature index records it, and readers check the model's against it.
        weights = weights_fingerprint(encoder)

    bad = {}
    for split in SPLITS:
        bad[split] = 0
        if split in empty:
            record_bad_images(cache_dir, split, {"bad": []})  # an earlier prepare's list for it no longer applies
            continue
        source = datamodule.source(split)
        description = describe_source(datamodule.source_factory, split, source)
        index = write_image_cache(source, cache_dir, split, description, on_bad_sample)
        record_bad_images(cache_dir, split, index)
        bad[split] = len(index["bad"])
        if encoder is not None:
            write_feature_cache(cache_dir, split, encoder, cfg.model.encoder, cfg.feature_batch_size, device,
                                weights=weights)
    # Last, once the caches it goes with are complete (the train split's holding the captions as
    # they are now, rebuilt if they changed): a prepare that fails (a split whose images cannot
    # be read, Ctrl-C) leaves no new vocab.json beside caches it did not finish, and does not say
    # "wrote vocab.json" before it stops. vocab.json records the digest of the train captions it
    # was counted from, which readers compare, so one left by an earlier prepare is never misused.
    if save_vocab(cache_dir, datamodule.vocab, datamodule.vocab_recipe()):
        log.info("wrote %s (%d words)", cache_dir / "vocab.json", len(datamodule.vocab))
    if any(bad.values()):
        log.warning(
            "%d bad images left out (%s), listed in %s",
            sum(bad.values()), ", ".join(f"{s}: {n}" for s, n in bad.items()), cache_dir / "bad_images.json",
        )
    left_out = f" (no {' or '.join(empty)} split: it has no images)" if empty else ""
    log.info("caches complete in %s%s", cache_dir, left_out)
    return bad


# What capgen-train needs to run without a split that has no images.
_WITHOUT = {"val": "trainer.limit_val_batches=0 monitor=train/loss monitor_mode=min", "test": "test=false"}


def _empty_splits(datamodule, on_bad_sample: str) -> list[str]:
    """The splits with no images, each said in one log line with what capgen-train needs without
    it; an empty train split is refused (no vocabulary, nothing to train on). A data set without
    a test (or val) split is still prepared: the other splits are cached."""
    why = ("its captions or annotation file gives no image that split"
           + (", or data.on_bad_sample=skip left out every one, as logged above" if on_bad_sample == "skip" else ""))
    if len(datamodule.source("train")) == 0:
        raise ValueError(f"data: the train split has no images ({why}), so there is no vocabulary to build and nothing "
                         "to train on; give the train split images (a split column, or data.source.split_fractions for "
                         "data=custom).")
    empty = [split for split in SPLITS if len(datamodule.source(split)) == 0]
    for split in empty:
        log.warning("the %s split has no images (%s): it is not cached, the other splits are. capgen-train then needs "
                    "%s (or give the %s split images and run capgen-prepare again, which adds it)",
                    split, why, _WITHOUT[split], split)
    return empty


def cache_folder(value: object) -> Path:
    """cache_dir as an existing folder to write in, created if need be; otherwise a one-paragraph
    ValueError naming the setting. An empty value is refused, not read as the current folder:
    Path("") is ".", and an unset $CACHE in `cache_dir=$CACHE` would fill it with caches."""
    fix = "give the folder to write the caches into, e.g. cache_dir=/scratch/shapes_cache"
    if value is None or not str(value).strip():
        raise ValueError(f"cache_dir={'null' if value is None else repr(value)}: no folder given; {fix}.")
    path = Path(str(value)).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"cache_dir={value}: {path} is a file, not a folder; {fix} (a new or an existing folder).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way, a read-only or virtual file system (/proc, /sys), no permission
        raise ValueError(f"cache_dir={value}: the folder {path} cannot be created ({e.strerror}); {fix}, "
                         "somewhere you can write.") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"cache_dir={value}: the folder {path} is not writable; {fix}, somewhere you can write.")
    return path


def run(cfg: DictConfig) -> None:
    """capgen-prepare's Hydra job: prepare, a failure ended in one paragraph."""
    with one_paragraph_on_failure("capgen-prepare", on_interrupt="The same command continues the caches from the "
                                  "rows already written."):
        prepare(cfg)
