"""LightningDataModule over any caption source.

A source is one split of a data set with this small interface:
    len(source); source.image(i) -> uint8 (H, W, 3) array; source.captions(i) -> list[str];
    source.image_id(i) -> int
A source may also carry `vocabulary` (a Vocabulary it must be read with, e.g. the course
file's own); otherwise the datamodule builds one from the train split only.
The datamodule receives a factory `source(split=...)` (a Hydra `_partial_`) and yields
`Batch`es:
    train:     every image once per epoch, paired with one of its references; the reference
               cycles with the epoch, so all are seen across epochs;
    val/test:  every image once, with reference 0 for the loss (scores use all references).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..vocab import Vocabulary


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W) uint8
    captions: torch.Tensor  # (B, T) <start> words <end> <pad>...
    lengths: torch.Tensor  # (B,) tokens per caption including <start> and <end>
    image_ids: torch.Tensor  # (B,)


def collate(items: list[tuple[torch.Tensor, list[int], int]]) -> Batch:
    images, ids, image_ids = zip(*items)
    lengths = torch.tensor([len(c) for c in ids])
    captions = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)  # 0 = <pad>
    for row, c in enumerate(ids):
        captions[row, : len(c)] = torch.tensor(c)
    return Batch(torch.stack(images), captions, lengths, torch.tensor(image_ids))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()  # (3, H, W)


class CaptionPairs(Dataset):
    """Item k is (image i, reference r): the flat list of every image's references."""

    def __init__(self, source, vocab: Vocabulary):
        self.source, self.vocab = source, vocab
        self.counts = [len(source.captions(i)) for i in range(len(source))]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int):
        i = int(np.searchsorted(self.offsets, k, side="right") - 1)
        caption = self.source.captions(i)[k - self.offsets[i]]
        return _to_tensor(self.source.image(i)), self.vocab.encode(caption), self.source.image_id(i)


class CyclingReferenceSampler(DistributedSampler):
    """One (image, reference) pair per image per epoch; image i uses reference
    (epoch + i) mod n_i, so every reference is used every n_i epochs.

    A DistributedSampler subclass so Lightning leaves it in place under DDP and calls
    set_epoch on it; each rank takes every world_size-th pair, padded to equal length.
    """

    def __init__(self, pairs: CaptionPairs, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        ddp = dist.is_available() and dist.is_initialized()
        world = num_replicas if num_replicas is not None else dist.get_world_size() if ddp else 1
        rank = rank if rank is not None else dist.get_rank() if ddp else 0
        super().__init__(pairs, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.pairs = pairs
        self.num_samples = math.ceil(len(pairs.counts) / world)
        self.total_size = self.num_samples * world

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
        return iter(int(self.pairs.offsets[i]) + (self.epoch + i) % self.pairs.counts[i] for i in mine)


class EvalImages(Dataset):
    """Each image once; reference 0 encoded for the validation loss."""

    def __init__(self, source, vocab: Vocabulary):
        self.source, self.vocab = source, vocab

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return _to_tensor(self.source.image(i)), self.vocab.encode(self.source.captions(i)[0]), self.source.image_id(i)


class CaptionDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Callable[..., object],
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        min_freq: int = 1,
        max_len: int = 20,
        seed: int = 0,
        vocab: Vocabulary | None = None,
    ):
        super().__init__()
        self.source_factory = source
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.min_freq, self.max_len, self.seed = num_workers, min_freq, max_len, seed
        self._vocab = vocab
        self._sources: dict[str, object] = {}

    def source(self, split: str):
        if split not in self._sources:
            self._sources[split] = self.source_factory(split=split)
        return self._sources[split]

    @property
    def vocab(self) -> Vocabulary:
        """Built from the train split on first use (or the one given, e.g. from a checkpoint)."""
        if self._vocab is None:
            train = self.source("train")
            if getattr(train, "vocabulary", None) is not None:
                self._vocab = train.vocabulary
                return self._vocab
            self._vocab = Vocabulary.build(
                (c for i in range(len(train)) for c in train.captions(i)), min_freq=self.min_freq, max_len=self.max_len
            )
        return self._vocab

    def references(self, split: str) -> dict[int, list[str]]:
        src = self.source(split)
        return {src.image_id(i): list(src.captions(i)) for i in range(len(src))}

    def _loader(self, dataset: Dataset, batch_size: int, **kw) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kw,
        )

    def train_dataloader(self) -> DataLoader:
        pairs = CaptionPairs(self.source("train"), self.vocab)
        return self._loader(pairs, self.batch_size, sampler=CyclingReferenceSampler(pairs, seed=self.seed), drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(EvalImages(self.source("val"), self.vocab), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(EvalImages(self.source("test"), self.vocab), self.eval_batch_size)
