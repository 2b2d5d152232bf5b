"""Tests for the course-file source (capgen.data.coco_pt) on a tiny coco.pt in the exact format."""

from __future__ import annotations

import functools
import logging
import pickle

import numpy as np
import pytest
import torch

from capgen.data import CaptionDataModule
from capgen.data.coco_pt import CocoPtSource

from helpers.coco_pt import CAPTIONS, LAYOUT, TOKENS, VAL_OFFSET, T, course_file


@pytest.fixture
def coco(tmp_path):
    path = tmp_path / "coco.pt"
    data = course_file()
    torch.save(data, path)
    return str(path), data


def expected(split: str) -> list[list[int]]:
    """Rows of each distinct image, images in order of their first row."""
    letters = LAYOUT["val" if split == "test" else split]
    order = list(dict.fromkeys(letters))
    return [[r for r, k in enumerate(letters) if k == letter] for letter in order]


def trimmed(row) -> list[int]:
    row = [int(x) for x in row]
    return row[: row.index(2) + 1]  # <START> ... <END>


# --- grouping, pixels, captions, ids ----------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_image_once_with_all_its_captions_and_pixels(coco, split, caplog):
    path, data = coco
    field = "val" if split == "test" else split
    with caplog.at_level(logging.WARNING, logger="capgen.data.coco_pt"):
        src = CocoPtSource(path, split)
    # The test split is val: said by it, where test scores are made, so they are not taken for held-out ones.
    assert ("its test scores are val scores" in caplog.text) == (split == "test")
    groups = expected(split)
    assert len(src) == len(groups) == {"train": 4, "val": 3, "test": 3}[split]
    for i, rows in enumerate(groups):
        image = src.image(i)
        assert image.dtype == np.uint8 and image.shape == (112, 112, 3)
        assert np.array_equal(image, data[f"{field}_images"][rows[0]].permute(1, 2, 0).numpy())
        words = [c.replace("<UNK>", "<unk>") for c in (CAPTIONS[field][r] for r in rows)]
        assert src.captions(i) == words
        assert src.image_id(i) == (VAL_OFFSET if field == "val" else 0) + rows[0]


def test_image_is_a_copy(coco):
    src = CocoPtSource(coco[0], "train")
    src.image(0)[:] = 0
    assert src.image(0).any()


def test_image_ids_unique_across_train_and_val(coco):
    path, _ = coco
    ids = [CocoPtSource(path, s).image_id(i) for s in ("train", "val") for i in range(len(CocoPtSource(path, s)))]
    assert len(ids) == len(set(ids)) == 7


# --- vocabulary and round trip ------------------------------------------------------------------

def test_vocabulary_keeps_the_files_ids(coco):
    vocab = CocoPtSource(coco[0], "train").vocabulary
    assert len(vocab) == len(TOKENS) and vocab.max_len == 15
    renamed = {"<NULL>": "<pad>", "<START>": "<start>", "<END>": "<end>", "<UNK>": "<unk>"}
    assert vocab.itos == [renamed.get(token, token) for token in TOKENS]
    assert vocab.stoi == {token: i for i, token in enumerate(TOKENS) if i >= 4}  # the specials are ids, not words
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)


@pytest.mark.parametrize("split", ["train", "val"])
def test_encoding_a_caption_gives_back_its_row(coco, split):
    path, data = coco
    src = CocoPtSource(path, split)
    for i, rows in enumerate(expected(split)):
        for caption, r in zip(src.captions(i), rows, strict=True):
            assert src.vocabulary.encode(caption) == trimmed(data[f"{split}_captions"][r])
    assert any(len(trimmed(row)) == T for row in data["train_captions"])  # the 15-word caption is in


# --- with the datamodule ------------------------------------------------------------------------

def test_datamodule_uses_the_files_vocabulary_and_rows(coco):
    path, data = coco
    dm = CaptionDataModule(source=functools.partial(CocoPtSource, path=path), batch_size=2, max_len=20)
    assert dm.vocab is dm.source("train").vocabulary and dm.vocab.max_len == 15

    def row_of(image_id: int, caption: list[int], split: str) -> int:
        """The file row holding this (image, caption), checking the image id owns it."""
        offset = VAL_OFFSET if split == "val" else 0
        group = next(g for g in expected(split) if g[0] == image_id - offset)
        return next(r for r in group if trimmed(data[f"{split}_captions"][r]) == caption)

    loader = dm.train_dataloader()
    all_rows = set(range(len(LAYOUT["train"])))
    seen = set()
    for epoch in range(3):  # images have at most 3 references, cycled one per epoch
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for image, caption, n, image_id in zip(batch.images, batch.captions, batch.lengths, batch.image_ids):
                r = row_of(int(image_id), caption[:n].tolist(), "train")
                assert torch.equal(image, data["train_images"][r])
                seen.add(r)
    assert seen == all_rows
    pairs = loader.dataset
    assert sorted(pairs[(k,)][1][0] for k in range(len(pairs))) == sorted(trimmed(row) for row in data["train_captions"])

    batches = list(dm.val_dataloader())
    ids = torch.cat([b.image_ids for b in batches]).tolist()
    assert ids == [VAL_OFFSET + g[0] for g in expected("val")]
    for batch in batches:
        for image, caption, n, image_id in zip(batch.images, batch.captions, batch.lengths, batch.image_ids):
            first = int(image_id) - VAL_OFFSET
            assert caption[:n].tolist() == trimmed(data["val_captions"][first])  # reference 0
            assert torch.equal(image, data["val_images"][first])
    assert dm.references("val")[VAL_OFFSET] == ["a dog near a tree", "<unk> on the street"]


def test_pickled_source_leaves_the_pixels_behind_and_reloads_them(coco):
    src = CocoPtSource(coco[0], "train")
    blob = pickle.dumps(src)
    assert len(blob) < 112 * 112 * 3  # not even one image travels to a worker
    copy = pickle.loads(blob)
    assert len(copy) == len(src)
    for i in range(len(src)):
        assert np.array_equal(copy.image(i), src.image(i)) and copy.captions(i) == src.captions(i)


# --- bad files ----------------------------------------------------------------------------------

def _swap_specials(d):
    d["vocab"]["idx_to_token"][1:3] = ["<END>", "<START>"]
    d["vocab"]["token_to_idx"].update({"<END>": 1, "<START>": 2})


def _no_end(d):
    d["train_captions"][2, 3] = 0  # "a cat" row: <START> a cat <NULL> ...


BAD = {
    "missing key": ("val_captions", lambda d: d.pop("val_captions")),
    "float images": ("train_images", lambda d: d.update(train_images=d["train_images"].float())),
    "HWC images": ("train_images", lambda d: d.update(train_images=d["train_images"].permute(0, 2, 3, 1))),
    "int32 captions": ("train_captions", lambda d: d.update(train_captions=d["train_captions"].int())),
    "fewer captions than images": ("train_captions", lambda d: d.update(train_captions=d["train_captions"][:-1])),
    "id past the vocabulary": ("train_captions", lambda d: d["train_captions"].__setitem__((1, 2), len(TOKENS))),
    "row without <END>": ("train_captions", _no_end),
    "specials out of order": ("vocab", _swap_specials),
    "token_to_idx disagrees": ("vocab", lambda d: d["vocab"]["token_to_idx"].update(dog=6)),
    "repeated token": ("vocab", lambda d: d["vocab"]["idx_to_token"].__setitem__(6, "dog")),
    "vocab not a dict": ("vocab", lambda d: d.update(vocab=list(TOKENS))),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_file_names_the_file_and_the_field(tmp_path, case):
    field, mutate = BAD[case]
    data = course_file()
    mutate(data)
    path = tmp_path / "coco.pt"
    torch.save(data, path)
    with pytest.raises(ValueError) as err:
        CocoPtSource(str(path), "train")
    assert str(path) in str(err.value) and repr(field) in str(err.value)


def test_bad_val_split_is_reported_by_the_val_source(tmp_path):
    data = course_file()
    data["val_images"] = data["val_images"][:, :1]  # one channel
    path = tmp_path / "coco.pt"
    torch.save(data, path)
    CocoPtSource(str(path), "train")  # train itself is fine
    for split in ("val", "test"):
        with pytest.raises(ValueError, match="'val_images'"):
            CocoPtSource(str(path), split)


def test_missing_file_says_where_to_put_it(tmp_path):
    path = tmp_path / "nowhere" / "coco.pt"
    with pytest.raises(FileNotFoundError) as err:
        CocoPtSource(str(path), "train")
    assert str(path) in str(err.value) and "data.source.path=" in str(err.value)


def test_unreadable_file(tmp_path):
    path = tmp_path / "coco.pt"
    path.write_text("not a torch file")
    with pytest.raises(ValueError, match="torch.load cannot read it"):
        CocoPtSource(str(path), "train")


def test_bad_split(coco):
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val', 'test'\)"):
        CocoPtSource(coco[0], "validation")


def test_words_the_tokenizer_would_change_are_reported(tmp_path):
    data = course_file()
    data["vocab"]["idx_to_token"].append("Cannot")
    data["vocab"]["token_to_idx"]["Cannot"] = len(TOKENS)
    path = tmp_path / "coco.pt"
    torch.save(data, path)
    with pytest.warns(UserWarning, match=r"'vocab'.*\['Cannot'\]"):
        CocoPtSource(str(path), "train")


def test_a_path_under_the_home_folder_may_be_given_with_a_tilde(coco, tmp_path, monkeypatch):
    # data.source.path=~/coco.pt reaches the source as typed (capgen.config.command_line quotes it).
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(CocoPtSource("~/coco.pt", "train")) == len(expected("train"))
    assert CaptionDataModule(CocoPtSource, cache_dir="~/cache").cache_dir == tmp_path / "cache"
