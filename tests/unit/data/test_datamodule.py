from collections import Counter

import numpy as np
import pytest
import torch

from capgen.data.datamodule import CaptionDataModule, CaptionPairs, CyclingReferenceSampler, collate
from capgen.data.resumable import ResumableLoader


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


def _image_of(pairs, k: int) -> int:
    return int(np.searchsorted(pairs.offsets, k, side="right") - 1)


def test_training_sees_each_image_once_per_epoch_and_all_references_across_epochs():
    src = TinySource("train", n=7, refs=3)
    dm = CaptionDataModule(source=lambda split: src, batch_size=1)
    pairs = CaptionPairs(src, dm.vocab)
    sampler = CyclingReferenceSampler(pairs, seed=1)
    seen = Counter()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert all(len(item) == 1 for item in items)  # one reference per image by default
        ks = [item[0] for item in items]
        assert sorted(_image_of(pairs, k) for k in ks) == list(range(7))  # every image exactly once per epoch
        # as before train_captions_per_image existed: image i takes reference (epoch + i) mod n_i
        assert all(k - pairs.offsets[_image_of(pairs, k)] == (epoch + _image_of(pairs, k)) % pairs.counts[_image_of(pairs, k)]
                   for k in ks)
        seen.update(ks)
    # images with 3 references show all 3 in 3 epochs; those with 2 repeat one
    for i in range(7):
        used = {k for k in seen if pairs.offsets[i] <= k < pairs.offsets[i + 1]}
        assert len(used) == pairs.counts[i]


def test_several_captions_per_image_are_distinct_references_of_that_image_cycling_over_epochs():
    src = TinySource("train", n=7, refs=3)  # odd images have 2 references, even ones 3
    dm = CaptionDataModule(source=lambda split: src, batch_size=1)
    pairs = CaptionPairs(src, dm.vocab)
    sampler = CyclingReferenceSampler(pairs, seed=1, per_image=2)
    used = {i: Counter() for i in range(7)}
    for epoch in range(3):
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert sorted(_image_of(pairs, item[0]) for item in items) == list(range(7))
        for item in items:
            i = _image_of(pairs, item[0])
            assert len(item) == 2 and {_image_of(pairs, k) for k in item} == {i}
            assert len(set(item)) == 2  # two different references (every image has at least 2)
            used[i].update(item)
    # 3 epochs x 2 = 6 captions per image: each of an image's n references exactly 6 / n times
    for i, counts in used.items():
        assert sorted(counts.values()) == [6 // pairs.counts[i]] * pairs.counts[i]
    # an item reads its image once, with its captions in the item's order
    image, captions, image_id = pairs[(pairs.offsets[2] + 2, int(pairs.offsets[2]))]
    assert (image == 2).all() and image_id == 2
    assert [dm.vocab.decode(c) for c in captions] == [dm.vocab.decode(dm.vocab.encode(src.captions(2)[r])) for r in (2, 0)]


def test_a_training_batch_holds_each_images_captions_image_major():
    dm = CaptionDataModule(source=lambda split: TinySource(split, n=8), batch_size=4, train_captions_per_image=3, max_len=20)
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape[0] == 4 and batch.captions.shape[0] == 12 and batch.captions_per_image == 3
    for row, caption in enumerate(batch.captions):
        b = row // 3
        i = int(batch.image_ids[b])
        assert (batch.images[b] == i).all()
        words = dm.vocab.decode(caption.tolist())
        assert words.startswith(f"image {i} caption ")


def test_train_captions_per_image_must_be_a_whole_number_of_at_least_1():
    import pytest

    with pytest.raises(ValueError, match=r"data.train_captions_per_image=0: must be a whole number of at least 1"):
        _dm(train_captions_per_image=0)


@pytest.mark.parametrize("data, setting", [("shapes", {"root": "/tmp"}), ("coco_pt", {"root": "/data"}),
                                           ("coco_pt", {"on_bad_sample": "skip"})])
def test_a_shared_data_setting_a_data_set_has_no_use_for_is_refused_naming_it(data, setting):
    """data.root or data.on_bad_sample on the built-in shapes or coco.pt (one file named by
    data.source.path): one paragraph saying what the data set reads, not the source's TypeError."""
    import functools

    from capgen.data.coco_pt import CocoPtSource
    from capgen.data.shapes import ShapesSource

    source = (functools.partial(ShapesSource, sizes={"train": 4}) if data == "shapes"
              else functools.partial(CocoPtSource, path="/data/coco.pt"))
    (key, value), = setting.items()
    with pytest.raises(ValueError, match=rf"^data\.{key}={value}: this data set .* leave data\.{key} out$") as err:
        CaptionDataModule(source, **setting)
    assert ("data.source.path" in str(err.value)) == (data == "coco_pt")


def test_sampler_shards_disjointly_across_ranks_with_padding():
    src = TinySource("train", n=7)
    dm = CaptionDataModule(source=lambda split: src)
    pairs = CaptionPairs(src, dm.vocab)
    shards = [list(CyclingReferenceSampler(pairs, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    images = [_image_of(pairs, item[0]) for item in shards[0] + shards[1]]
    assert set(images) == set(range(7))  # 8 slots: all 7 images plus one repeat


def test_collate_pads_with_zeros_and_keeps_each_images_captions_together():
    b = collate([(torch.zeros(3, 2, 2, dtype=torch.uint8), [[1, 5, 2]], 7), (torch.ones(3, 2, 2, dtype=torch.uint8), [[1, 5, 6, 6, 2]], 8)])
    assert b.captions.tolist() == [[1, 5, 2, 0, 0], [1, 5, 6, 6, 2]]
    assert b.lengths.tolist() == [3, 5] and b.image_ids.tolist() == [7, 8] and b.captions_per_image == 1
    two = collate([(torch.zeros(3, 2, 2, dtype=torch.uint8), [[1, 5, 2], [1, 6, 2]], 7),
                   (torch.ones(3, 2, 2, dtype=torch.uint8), [[1, 5, 6, 2], [1, 2]], 8)])
    assert two.images.shape[0] == 2 and two.captions_per_image == 2
    assert two.captions.tolist() == [[1, 5, 2, 0], [1, 6, 2, 0], [1, 5, 6, 2], [1, 2, 0, 0]]
    assert two.lengths.tolist() == [3, 3, 4, 2]


def test_a_source_with_its_own_vocabulary_is_read_with_it():
    from capgen.vocab import Vocabulary

    fixed = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "image", "caption"], max_len=5)

    class WithVocab(TinySource):
        vocabulary = fixed

    dm = CaptionDataModule(source=lambda split: WithVocab(split))
    assert dm.vocab is fixed


def test_train_batches_counts_each_processs_whole_batches_whatever_the_captions_per_image():
    # capgen-train refuses a run with none (capgen.commands.train.fit.check_train_batches)
    for n, batch, per_image in [(6, 4, 1), (6, 4, 3), (3, 4, 1), (8, 4, 2), (7, 7, 1), (13, 4, 1)]:
        dm = CaptionDataModule(source=lambda split, n=n: TinySource(split, n=n), batch_size=batch, max_len=20,
                               train_captions_per_image=per_image)
        assert dm.train_batches() == len(dm.train_dataloader()) == len(list(dm.train_dataloader())), (n, batch, per_image)
        sampler = CyclingReferenceSampler(CaptionPairs(dm.source("train"), dm.vocab), num_replicas=2, rank=1,
                                          per_image=per_image)
        assert dm.train_batches(2) == len(sampler) // batch
    assert (dm.train_batches(4), dm.train_batches(5)) == (1, 0)  # 13 images: 4 for each of 4 processes, 3 of 5


class _Items:
    """A data set whose item is the sampler's index itself (the pairs of one image)."""

    def __getitem__(self, item):
        return item


def test_a_mid_epoch_loader_state_continues_in_batches_of_its_size_only():
    src = TinySource("train", n=16, refs=3)
    pairs = CaptionPairs(src, CaptionDataModule(source=lambda split: src, batch_size=1).vocab)

    def loader(batch_size: int, epoch: int = 0, state: dict | None = None) -> ResumableLoader:
        made = ResumableLoader(_Items(), batch_size=batch_size, collate_fn=lambda b: b,
                               sampler=CyclingReferenceSampler(pairs, seed=1), drop_last=True)
        if state is not None:
            made.load_state_dict(state)
        made.sampler.set_epoch(epoch)
        return made

    whole = list(loader(4))
    first = loader(4)
    batches = iter(first)
    served = [next(batches), next(batches)]
    state = first.state_dict()
    assert [*served, *loader(4, state=state)] == whole  # the same batch size continues exactly
    # 2 batches of 4 read as 2 of 2 by Lightning's progress: the epoch would end 4 images early
    with pytest.raises(ValueError, match=r"data.batch_size=2: .* after 8 training images .* batches of 4.*data.batch_size=4"):
        next(iter(loader(2, state=state)))
    assert len(list(loader(2, epoch=1, state=state))) == 8  # the next epoch takes any batch size
