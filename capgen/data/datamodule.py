"""LightningDataModule over any caption source.

A source is one split of a data set with this small interface:
    len(source); source.image(i) -> uint8 (H, W, 3) array; source.captions(i) -> list[str];
    source.image_id(i) -> int
A source may also carry `vocabulary` (a Vocabulary it must be read with, e.g. the course
file's own); otherwise the datamodule builds one from the train split only.
The datamodule receives a factory `source(split=...)` (a Hydra `_partial_`) and yields
`Batch`es:
    train:     every image once per epoch, with `train_captions_per_image` of its references (1 by
               default); they cycle with the epoch, so all are seen across epochs. A batch
               holds batch_size images and batch_size * train_captions_per_image captions, and
               each image is encoded once for all of its captions;
    val/test:  every image once, with reference 0 for the loss (scores use all references).
An image that fails to decode while training reads it (no capgen-prepare scan first, or a
file changed after its split was indexed) follows the source's `on_bad_sample`: "error"
stops the run with a one-paragraph error naming the file, "skip" leaves it out of its
batch and reports the count once per epoch (see TrainLoader). A file missing since its split
was read (images.FileGone) is told so, with the fix to put it back.
With `cache_dir` (a capgen-prepare folder, see capgen.data.cache) a split is read from its
image cache when that is complete and made from the same source settings and the same data
(image ids, captions, image files' sizes and modification times), else from the raw source
(one log line says why and gives the capgen-prepare command that rebuilds it); vocab.json
there is the vocabulary when it was counted from the train split's captions as they are. With `use_features` the batches
carry the cached features of a frozen encoder instead of images, and a missing feature cache,
or one made by another encoder config or other weights than the model's (`encoder`,
`encoder_weights`), is an error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..vocab import Vocabulary
from .cache import (
    CacheDamaged,
    CachedFeatures,
    CachedImages,
    CacheUnavailable,
    captions_digest,
    describe_source,
    load_vocab,
)
from .encoder_weights import EncoderWeights
from .images import BadSampleError, FileGone
from .resumable import ResumableLoader

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """B images and their R = B k captions, k per image, image-major (rows b k .. b k + k - 1
    describe image b): k = 1 in evaluation, data.train_captions_per_image in training."""

    images: torch.Tensor  # (B, 3, H, W) uint8, or cached features (B, P, D) float16 (use_features)
    captions: torch.Tensor  # (R, T) <start> words <end> <pad>...
    lengths: torch.Tensor  # (R,) tokens per caption including <start> and <end>
    image_ids: torch.Tensor  # (B,)

    @property
    def captions_per_image(self) -> int:
        return len(self.captions) // len(self.images)


def collate(items: list[tuple[torch.Tensor, list[list[int]], int]]) -> Batch:
    """items: (image, its k encoded captions, image id), k the same for every item."""
    images, captions, image_ids = zip(*items)
    ids = [c for image_captions in captions for c in image_captions]  # image-major
    lengths = torch.tensor([len(c) for c in ids])
    captions = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)  # 0 = <pad>
    for row, c in enumerate(ids):
        captions[row, : len(c)] = torch.tensor(c)
    return Batch(torch.stack(images), captions, lengths, torch.tensor(image_ids))


# A training image that turns out unreadable when it is read.
FIX_TRAINING = ("delete or replace the file; or set data.on_bad_sample=skip, which leaves such images out of their "
                "batches; or list every unreadable image ahead with capgen-prepare data.on_bad_sample=skip "
                "cache_dir=<folder> and train with data.cache_dir=<folder>, which leaves them out")
# A training image whose file was there when the split was read and is not now (images.FileGone).
FIX_TRAINING_GONE = ("put the file back; or, if it is gone for good, set data.on_bad_sample=skip, which leaves out the "
                     "images whose files are missing when the data is read (and out of its batch one that goes missing "
                     "during training)")
_NAMES_REPORTED = 5  # file names per epoch report


class Unreadable(NamedTuple):
    """A training item whose image could not be decoded: its BadSampleError, as data."""

    path: str
    reason: str
    gone: bool = False  # the file is missing now (images.FileGone), not unreadable


class TrainingBatch(NamedTuple):
    """The training collate's result: the batch of the readable items (None if there are
    none) and the unreadable ones, which TrainLoader takes out."""

    batch: Batch | None
    unreadable: tuple[Unreadable, ...]


def collate_training(items: list) -> TrainingBatch:
    kept = [x for x in items if not isinstance(x, Unreadable)]
    return TrainingBatch(collate(kept) if kept else None, tuple(x for x in items if isinstance(x, Unreadable)))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 image (H, W, 3) -> (3, H, W); cached features (P, D) stay as they are."""
    x = torch.from_numpy(np.ascontiguousarray(image))
    return x.permute(2, 0, 1).contiguous() if x.ndim == 3 else x


class CaptionPairs(Dataset):
    """Pair k is (image i, reference r): the flat list of every image's references. An item
    is a tuple of pairs of one image (the sampler's choice of its references), read as
    (image, [caption ids per pair], image id): the image is read once.

    An image that cannot be decoded gives an Unreadable marker instead of raising: raised in
    a DataLoader worker, the error would reach the main process as a traceback text, and it
    would end the run even under on_bad_sample=skip. TrainLoader applies the policy."""

    def __init__(self, source, vocab: Vocabulary):
        self.source, self.vocab = source, vocab
        self.counts = [len(source.captions(i)) for i in range(len(source))]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, ks: tuple[int, ...]):
        i = int(np.searchsorted(self.offsets, ks[0], side="right") - 1)
        if any(not self.offsets[i] <= k < self.offsets[i + 1] for k in ks):
            raise IndexError(f"pairs {ks} are not all references of image {i}")
        captions = self.source.captions(i)
        try:
            image = self.source.image(i)
        except BadSampleError as e:
            return Unreadable(e.path, e.reason or "unreadable", isinstance(e, FileGone))
        return _to_tensor(image), [self.vocab.encode(captions[k - self.offsets[i]]) for k in ks], self.source.image_id(i)


class CyclingReferenceSampler(DistributedSampler):
    """Each image once per epoch, with `per_image` of its references as one item (a tuple of
    pair indices): image i uses references (epoch k + i + j) mod n_i for j < k = per_image,
    so every reference is used every ceil(n_i / k) epochs (k >= n_i: all of them, some
    twice when k > n_i, in every epoch).

    A DistributedSampler subclass so Lightning leaves it in place under DDP and calls
    set_epoch on it; each rank takes every world_size-th pair, padded to equal length.
    """

    def __init__(self, pairs: CaptionPairs, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None, per_image: int = 1):
        ddp = dist.is_available() and dist.is_initialized()
        world = num_replicas if num_replicas is not None else dist.get_world_size() if ddp else 1
        rank = rank if rank is not None else dist.get_rank() if ddp else 0
        super().__init__(pairs, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.pairs, self.per_image = pairs, per_image
        self.num_samples = math.ceil(len(pairs.counts) / world)
        self.total_size = self.num_samples * world
        self.resumed_epoch, self.resumed_skip = -1, 0

    def resume_at(self, epoch: int, served: int) -> None:
        """In `epoch`, leave out the first `served` images of this rank: a run resumed from a
        mid-epoch checkpoint continues where it stopped (see capgen.data.resumable)."""
        self.resumed_epoch, self.resumed_skip = epoch, served

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        n = len(self.pairs.counts)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        order += order[: self.total_size - n]  # pad so ranks get equal counts
        mine = order[self.rank : self.total_size : self.num_replicas]
        if self.epoch == self.resumed_epoch:
            mine = mine[self.resumed_skip :]
        k, offsets, counts = self.per_image, self.pairs.offsets, self.pairs.counts
        return iter(tuple(int(offsets[i]) + (self.epoch * k + i + j) % counts[i] for j in range(k)) for i in mine)


class TrainLoader(ResumableLoader):
    """The training DataLoader (collate_fn=collate_training): it applies `on_bad_sample` to
    the images that could not be decoded. "error" raises the one-paragraph BadSampleError
    here, in the main process, also when a worker read the file. "skip" leaves the image out
    of its batch, counts it and logs the epoch's count and first file names once its
    batches are all drawn (or, for an epoch cut short, when the next one starts or fitting
    ends: CaptionDataModule.teardown).

    The sampler's order and the loader's position are unchanged, so resuming stays exact: a
    batch is only smaller. A batch that loses every item is handed on as None, which
    Lightning answers by skipping the step (no forward pass, no optimizer step; the
    learning-rate schedule advances, as for a step FiniteLossGuard skips). Under DDP one
    process cannot skip a step alone (the others would wait for its gradients), so there
    such a batch stops the run instead.
    """

    def __init__(self, *args, on_bad_sample: str = "error", **kwargs):
        super().__init__(*args, **kwargs)
        self.on_bad_sample = on_bad_sample
        self.unreadable: list[Unreadable] = []  # left out and not reported yet
        self._epoch = 0  # the epoch they were left out in

    def __iter__(self):
        self.report()
        return self._readable(super().__iter__())

    def _readable(self, batches):
        for batch, unreadable in batches:
            if unreadable:
                self._leave_out(batch, unreadable)
            yield batch
        self.report()

    def _leave_out(self, batch: Batch | None, unreadable: tuple[Unreadable, ...]) -> None:
        first = unreadable[0]
        if self.on_bad_sample != "skip":
            raise BadSampleError(first.path, first.reason, FIX_TRAINING_GONE if first.gone else FIX_TRAINING)
        if batch is None and self.sampler.num_replicas > 1:
            raise BadSampleError(
                first.path,
                f"{first.reason}; every image of its training batch is unreadable ({', '.join(u.path for u in unreadable)}), "
                f"and with {self.sampler.num_replicas} processes one cannot skip a step alone, as the others would wait for it",
                "delete or replace those files, or list every unreadable image ahead with capgen-prepare "
                "data.on_bad_sample=skip cache_dir=<folder> and train with data.cache_dir=<folder>, which leaves them out",
            )
        self.unreadable += unreadable
        self._epoch = self.sampler.epoch

    def report(self) -> None:
        """Log the images left out since the last report, if any."""
        if not self.unreadable:
            return
        names = list(dict.fromkeys(u.path for u in self.unreadable))
        more = f" and {len(names) - _NAMES_REPORTED} more" if len(names) > _NAMES_REPORTED else ""
        log.warning(
            "epoch %d: %d unreadable training image%s left out of %s (data.on_bad_sample=skip): %s%s; the "
            "first: %s. capgen-prepare data.on_bad_sample=skip cache_dir=<folder> lists every such file ahead, and "
            "training with data.cache_dir=<folder> leaves them out", self._epoch, len(self.unreadable),
            "" if len(self.unreadable) == 1 else "s", "its batch" if len(self.unreadable) == 1 else "their batches",
            ", ".join(names[:_NAMES_REPORTED]), more, self.unreadable[0].reason,
        )
        self.unreadable = []


class EvalImages(Dataset):
    """Each image once; reference 0 encoded for the validation loss (one caption per image)."""

    def __init__(self, source, vocab: Vocabulary):
        self.source, self.vocab = source, vocab

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return _to_tensor(self.source.image(i)), [self.vocab.encode(self.source.captions(i)[0])], self.source.image_id(i)


class Scenes:
    """A split's scenes by image id (known object boxes, for the shapes data), and the side in
    pixels of the frame their boxes are given in."""

    def __init__(self, source) -> None:
        self.source, self.image_size = source, source.image_size
        self.index = {source.image_id(i): i for i in range(len(source))}

    def scene_of(self, image_id: int):
        if image_id not in self.index:
            raise KeyError(f"image id {image_id} is not in the split's scenes")
        return self.source.scene(self.index[image_id])


def _check_shared_settings(source: Callable[..., object], shared: dict) -> None:
    """A ValueError, in one paragraph, for data.root or data.on_bad_sample given to a data set
    that has no use for it (the built-in shapes, drawn in memory; coco.pt, one file of decoded
    pixels named by data.source.path), instead of the constructor's TypeError."""
    target = source.func if isinstance(source, functools.partial) else source
    try:
        takes = inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to read: the constructor says it itself
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        return
    path = (source.keywords if isinstance(source, functools.partial) else {}).get("path")
    name = getattr(target, "__name__", str(target))
    for key in shared:
        if key in takes:
            continue
        if path is None:
            why = "is drawn in memory: nothing is read from disk"
        elif key == "root":
            why = f"reads one file, data.source.path (now {path}): to read another, give data.source.path=<folder>/coco.pt"
        else:
            why = f"holds decoded pixels in data.source.path ({path}): no image file can fail to read"
        raise ValueError(f"data.{key}={shared[key]}: this data set ({name}) {why}; leave data.{key} out")


class CaptionDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Callable[..., object],
        batch_size: int = 64,
        train_captions_per_image: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        min_freq: int = 1,
        max_len: int = 20,
        seed: int = 0,
        vocab: Vocabulary | None = None,
        cache_dir: str | None = None,
        use_features: bool = False,
        encoder: dict | None = None,
        encoder_weights: EncoderWeights | None = None,
        root: str | None = None,
        on_bad_sample: str | None = None,
        prepare_args: Sequence[str] | None = None,
    ):
        """encoder, encoder_weights: the model's encoder config and the fingerprint of its weights
        (capgen.data.encoder_weights), which a feature cache must have been made by (given by
        capgen-train and capgen-eval; needed with use_features only).
        root, on_bad_sample: passed on to the source factory when set (file-based sources),
        so every split's source shares them and `data.root=...` is the one place to say it.
        prepare_args: the capgen-prepare arguments that write this data's caches (`data=<name>`
        and the data settings given, capgen.config.prepare_args; handed over by the commands),
        for the lines that give that command (prepare_command); None: a placeholder for them.
        batch_size counts images; a training batch has train_captions_per_image captions of each
        (see the module docstring)."""
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("train_captions_per_image", train_captions_per_image, 1),
                                   ("eval_batch_size", eval_batch_size or 1, 1),
                                   ("num_workers", num_workers, 0), ("min_freq", min_freq, 1), ("max_len", max_len, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"data.{name}={value!r}: must be a whole number of at least {least}")
        if use_features and not cache_dir:
            raise ValueError(
                "data.use_features=true needs data.cache_dir: the folder capgen-prepare features=true wrote"
            )
        shared = {k: v for k, v in (("root", root), ("on_bad_sample", on_bad_sample)) if v is not None}
        _check_shared_settings(source, shared)
        # Bound into the partial (not passed at call time) so cache descriptions include them.
        source = functools.partial(source, **shared) if shared else source
        self.source_factory = source
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.train_captions_per_image = train_captions_per_image
        self.num_workers, self.min_freq, self.max_len, self.seed = num_workers, min_freq, max_len, seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None  # data.cache_dir=~/cache, as capgen-prepare's
        self.use_features, self.encoder, self.encoder_weights = use_features, encoder, encoder_weights
        self._unchecked_weights_said = False  # a feature cache too old to check: said once
        self._unchecked_files_said = False  # a cache too old to record its image files: said once
        self.prepare_args = [str(a) for a in prepare_args] if prepare_args is not None else None
        self._vocab = vocab
        self._sources: dict[str, object] = {}
        self._pictures: dict[str, tuple[object, dict[int, int]]] = {}
        self._train_loader: TrainLoader | None = None

    def prepare_command(self, *settings: str) -> str:
        """The capgen-prepare command that writes this data's caches into data.cache_dir (or
        `cache_dir=<folder>` without one), quoted for the shell; `settings` (`features=true`,
        `data.on_bad_sample=skip`) are added, replacing a given value of the same key."""
        keys = {s.partition("=")[0].lstrip("+") for s in settings}
        given = [a for a in self.prepare_args or () if a.partition("=")[0].lstrip("+") not in keys]
        data = [shlex.quote(a) for a in given] if self.prepare_args is not None else ["data=<this data config>"]
        folder = shlex.quote(f"cache_dir={self.cache_dir}") if self.cache_dir else "cache_dir=<folder>"
        return " ".join(["capgen-prepare", *data, folder, *map(shlex.quote, settings)])

    def source(self, split: str):
        if split not in self._sources:
            source = self.source_factory(split=split)
            self._sources[split] = source if self.cache_dir is None else self._cached(split, source)
        return self._sources[split]

    def _cached(self, split: str, raw):
        """The split from the cache when there is a usable one (see the module docstring). An
        empty split has nothing to cache: its raw source, for the command to say it is empty."""
        if len(raw) == 0:
            return raw
        description, vocabulary = describe_source(self.source_factory, split, raw), getattr(raw, "vocabulary", None)
        if self.use_features:
            try:
                with self._rebuilt_by("features=true"):
                    cached = CachedFeatures(self.cache_dir, split, description, vocabulary, source=raw)
                log.info("the %s split: %d images' encoder features from the cache in %s", split, len(cached), self.cache_dir)
                self._say_unchecked_files(cached)
                return cached
            except CacheUnavailable as e:
                raise ValueError(
                    f"data.use_features=true, but {e}. Write the feature cache with: "
                    f"{self.prepare_command('features=true')} model/encoder=<the training run's encoder> (it rebuilds "
                    "what no longer matches)"
                ) from None
        try:
            with self._rebuilt_by():
                cached = CachedImages(self.cache_dir, split, description, vocabulary, source=raw)
            log.info("the %s split: %d images from the cache in %s", split, len(cached), self.cache_dir)
            self._say_unchecked_files(cached)
            return cached
        except CacheUnavailable as e:
            log.info("no usable image cache for the %s split (%s): reading the raw source; %s writes or rebuilds it",
                     split, e, self.prepare_command())
        bad = self._bad_image_ids(split)
        # Images capgen-prepare found unreadable are left out of the raw source as well.
        return self.source_factory(split=split, exclude_ids=bad) if bad else raw

    @contextlib.contextmanager
    def _rebuilt_by(self, *settings: str):
        """A damaged cache's error with this data's capgen-prepare command (prepare_command)."""
        try:
            yield
        except CacheDamaged as e:
            raise e.fixed_by(self.prepare_command(*settings)) from None

    def _say_unchecked_files(self, cached) -> None:
        """One warning per datamodule for a cache too old to record its image files."""
        if cached.files_checked or self._unchecked_files_said:
            return
        self._unchecked_files_said = True
        log.warning(
            "%s records no state of the image files it was made from (written before capgen recorded it), so whether "
            "images were replaced since cannot be checked (its captions are; other splits' caches so old are not said "
            "again); %s rebuilds them with the record", cached.index_file, self.prepare_command(),
        )

    def _bad_image_ids(self, split: str) -> list[int]:
        path = self.cache_dir / "bad_images.json"
        if not path.is_file():
            return []
        return [int(b["image_id"]) for b in json.loads(path.read_text()).get(split, [])]

    def pictures(self, split: str, image_ids: list[int]) -> list[np.ndarray]:
        """The images (H, W, 3) uint8 of these ids, for figures, also when training reads features."""
        if split not in self._pictures:
            src = self.source(split)
            if self.use_features:
                raw = self.source_factory(split=split)
                try:
                    description = describe_source(self.source_factory, split, raw)
                    with self._rebuilt_by():
                        src = CachedImages(self.cache_dir, split, description, getattr(raw, "vocabulary", None), source=raw)
                except CacheUnavailable:
                    src = raw
            self._pictures[split] = (src, {src.image_id(i): i for i in range(len(src))})
        src, index = self._pictures[split]
        return [src.image(index[int(i)]) for i in image_ids]

    def vocab_recipe(self) -> dict:
        """What the vocabulary is built from; vocab.json records it so a stale one is not used:
        the train source's settings and, for a source of files, its captions' digest (a
        vocab.json counted before they were edited is not used with them)."""
        train = self.source("train")
        # A cached split keeps the description of the raw source it was made from.
        source = getattr(train, "description", None) or describe_source(self.source_factory, "train", train)
        captions = captions_digest(train)
        return {"source": source, **({"captions": captions} if captions else {}), "min_freq": self.min_freq,
                "max_len": self.max_len}

    @property
    def vocab(self) -> Vocabulary:
        """Built from the train split on first use (or the one given, e.g. from a checkpoint,
        or the cache's vocab.json)."""
        if self._vocab is None and self.cache_dir is not None:
            try:
                with self._rebuilt_by():
                    self._vocab = load_vocab(self.cache_dir, self.vocab_recipe())
            except CacheUnavailable as e:
                log.info("%s. The vocabulary is built from the train split instead; %s writes a vocab.json for these "
                         "settings", e, self.prepare_command())
        if self._vocab is None:
            train = self.source("train")
            if getattr(train, "vocabulary", None) is not None:
                self._vocab = train.vocabulary
                return self._vocab
            self._vocab = Vocabulary.build(
                (c for i in range(len(train)) for c in train.captions(i)), min_freq=self.min_freq, max_len=self.max_len
            )
        return self._vocab

    def scenes(self, split: str) -> Scenes | None:
        """The split's scenes (known object boxes, for the grounding score), or None when its
        images have none. A cached split's source has no scenes, so they come from the raw
        source when its class has them (shapes: cheap, nothing is rendered)."""
        source = self.source(split)
        if not hasattr(source, "scene"):
            factory = self.source_factory
            if not hasattr(getattr(factory, "func", factory), "scene"):
                return None
            source = factory(split=split)
        return Scenes(source)

    def references(self, split: str) -> dict[int, list[str]]:
        src = self.source(split)
        return {src.image_id(i): list(src.captions(i)) for i in range(len(src))}

    def _loader(self, dataset: Dataset, batch_size: int, cls: type[DataLoader] = DataLoader, **kw) -> DataLoader:
        return cls(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **{"collate_fn": collate, **kw},
        )

    def _loading(self, split: str):
        """The split's source for a DataLoader; cached features only if the model's encoder made them."""
        source = self.source(split)
        if self.use_features:
            self.check_features(split)
        return source

    def check_features(self, split: str) -> None:
        """With use_features: the split's feature cache was made by the model's encoder, its
        config and its weights (an error names both and the fix). A cache too old to record its
        weights is accepted, and one log line says they could not be checked. capgen-train calls
        this before it writes anything; every loader calls it again (cheap: the fingerprints are
        computed by then)."""
        if self.encoder is None or self.encoder_weights is None:
            raise ValueError(
                "data.use_features=true: the feature cache must be checked against the model's encoder config and "
                "weights; pass CaptionDataModule(encoder=<model.encoder config>, encoder_weights=EncoderWeights("
                "weights_fingerprint(model.encoder), ...)) (capgen.data.encoder_weights; capgen-train and capgen-eval "
                "pass the model's)"
            )
        source = self.source(split)
        if len(source) == 0:
            return  # an empty split reads no features (see _cached)
        if not source.check_encoder(self.encoder, self.encoder_weights) and not self._unchecked_weights_said:
            self._unchecked_weights_said = True
            log.warning(
                "%s records no fingerprint of the encoder weights that made its features (written before capgen "
                "recorded them), so whether they are those of %s cannot be checked; running capgen-prepare "
                "features=true again remakes the cache with the record", source.index_file, self.encoder_weights.owner,
            )

    def train_batches(self, world_size: int = 1) -> int:
        """The training batches of an epoch in each of `world_size` processes, as train_dataloader
        makes them: the sampler hands each process ceil(images / world_size) items (padded), one
        per image whatever train_captions_per_image is, and the loader drops the incomplete last batch."""
        return math.ceil(len(self.source("train")) / world_size) // self.batch_size

    def train_dataloader(self) -> DataLoader:
        source = self._loading("train")
        pairs = CaptionPairs(source, self.vocab)
        sampler = CyclingReferenceSampler(pairs, seed=self.seed, per_image=self.train_captions_per_image)
        # Its own generator: creating its iterator must not draw from the global one that
        # dropout uses, or a resumed run's dropout masks would differ (capgen.lightning.callbacks.ExactResume).
        generator = torch.Generator().manual_seed(self.seed)
        # File-based sources carry their policy; the others never fail to decode an image.
        policy = getattr(source, "on_bad_sample", "error")
        self._train_loader = self._loader(pairs, self.batch_size, sampler=sampler, drop_last=True, generator=generator,
                                          cls=TrainLoader, collate_fn=collate_training, on_bad_sample=policy)
        return self._train_loader

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self._train_loader is not None:
            self._train_loader.report()  # the last epoch's, when it was cut short

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Every image of `split` once, with reference 0 for the loss."""
        # Its own generator too: each pass over a loader seeds its iterator from the loader's
        # generator, or from the global one that dropout uses when it has none. Validation
        # between a checkpoint and the next training step would then move dropout's stream by
        # two draws that a run resumed from that checkpoint never makes.
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(EvalImages(self._loading(split), self.vocab), self.eval_batch_size, generator=generator)
