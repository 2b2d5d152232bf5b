from collections import Counter

import numpy as np
import torch

from capgen.data.datamodule import CaptionDataModule, CaptionPairs, CyclingReferenceSampler, collate


class TinySource:
    """A source in the datamodule's interface with known images and captions."""

    def __init__(self, split: str, n: int = 6, refs: int = 3):
        self.split, self.n, self.refs = split, n, refs

    def __len__(self):
        return self.n

    def image(self, i):
        return np.full((8, 8, 3), i, dtype=np.uint8)

    def captions(self, i):
        word = "val_only" if self.split == "val" else "shape"
        return [f"image {i} caption {r} {word}" + " extra" * (i % 3) for r in range(self.refs - (i % 2))]

    def image_id(self, i):
        return {"train": 0, "val": 1000, "test": 2000}[self.split] + i


def _dm(**kw):
    return CaptionDataModule(source=lambda split: TinySource(split), batch_size=4, max_len=20, **kw)


def test_vocab_comes_from_train_split_only():
    dm = _dm()
    assert "shape" in dm.vocab.stoi and "val_only" not in dm.vocab.stoi
    ids = dm.vocab.encode(dm.source("val").captions(0)[0])
    assert dm.vocab.unk_id in ids


def test_batches_hold_images_padded_captions_lengths_and_ids():
    dm = _dm()
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (4, 3, 8, 8)
    assert batch.image_ids.tolist() == [1000, 1001, 1002, 1003]
    for row, n, image_id in zip(batch.captions, batch.lengths, batch.image_ids):
        assert row[0] == dm.vocab.start_id and row[n - 1] == dm.vocab.end_id
        assert (row[n:] == 0).all()
        i = int(image_id) - 1000
        assert (batch.images[i - batch.image_ids[0] + 1000] == i).all()
        # val/test use reference 0 for the loss
        assert dm.vocab.decode(row.tolist()) == dm.vocab.decode(dm.vocab.encode(dm.source("val").captions(i)[0]))
    assert batch.captions.shape[1] == int(batch.lengths.max())


def test_validation_yields_each_image_once_and_references_are_complete():
    dm = _dm()
    ids = torch.cat([b.image_ids for b in dm.val_dataloader()]).tolist()
    assert sorted(ids) == list(range(1000, 1006))
    refs = dm.references("val")
    assert set(refs) == set(ids) and refs[1001] == TinySource("val").captions(1)


def test_training_sees_each_image_once_per_epoch_and_all_references_across_epochs():
    src = TinySource("train", n=7, refs=3)
    dm = CaptionDataModule(source=lambda split: src, batch_size=1)
    pairs = CaptionPairs(src, dm.vocab)
    sampler = CyclingReferenceSampler(pairs, seed=1)
    seen = Counter()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        ks = list(sampler)
        images = [int(np.searchsorted(pairs.offsets, k, side="right") - 1) for k in ks]
        assert sorted(images) == list(range(7))  # every image exactly once per epoch
        seen.update(ks)
    # images with 3 references show all 3 in 3 epochs; those with 2 repeat one
    for i in range(7):
        used = {k for k in seen if pairs.offsets[i] <= k < pairs.offsets[i + 1]}
        assert len(used) == pairs.counts[i]


def test_sampler_shards_disjointly_across_ranks_with_padding():
    src = TinySource("train", n=7)
    dm = CaptionDataModule(source=lambda split: src)
    pairs = CaptionPairs(src, dm.vocab)
    shards = [list(CyclingReferenceSampler(pairs, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    images = [int(np.searchsorted(pairs.offsets, k, side="right") - 1) for k in shards[0] + shards[1]]
    assert set(images) == set(range(7))  # 8 slots: all 7 images plus one repeat


def test_collate_pads_with_zeros():
    b = collate([(torch.zeros(3, 2, 2, dtype=torch.uint8), [1, 5, 2], 7), (torch.ones(3, 2, 2, dtype=torch.uint8), [1, 5, 6, 6, 2], 8)])
    assert b.captions.tolist() == [[1, 5, 2, 0, 0], [1, 5, 6, 6, 2]]
    assert b.lengths.tolist() == [3, 5] and b.image_ids.tolist() == [7, 8]


def test_a_source_with_its_own_vocabulary_is_read_with_it():
    from capgen.vocab import Vocabulary

    fixed = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "image", "caption"], max_len=5)

    class WithVocab(TinySource):
        vocabulary = fixed

    dm = CaptionDataModule(source=lambda split: WithVocab(split))
    assert dm.vocab is fixed
