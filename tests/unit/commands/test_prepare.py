"""capgen-prepare's cache_dir: a folder to write the caches into, or a refusal naming it; and what it does
with a data set's own splits: an empty one, a bad image."""

import json
import logging

import hydra
import pytest

from capgen.commands.prepare import prepare
from capgen.data.cache import CachedImages

from helpers.fixtures_real import make_custom
from helpers.runs import compose_command


@pytest.mark.parametrize("given, says", [
    ("cache_dir=", r"cache_dir='': no folder given; give the folder to write the caches into, e\.g\. cache_dir=/"),
    ("cache_dir=null", r"cache_dir=null: no folder given; give the folder"),
    ("cache_dir=a_file", r"cache_dir=a_file: .*/a_file is a file, not a folder; give the folder"),
    ("cache_dir=a_file/cache", r"cache_dir=a_file/cache: the folder .*/a_file/cache cannot be created \(Not a directory\); "
                               r"give the folder .*, somewhere you can write\."),
    ("cache_dir=ro/cache", r"cache_dir=ro/cache: the folder .*/ro/cache is not writable; give the folder"),
])
def test_a_cache_dir_that_is_no_folder_to_write_in_is_refused_naming_it(read_only, tmp_path, monkeypatch, given, says):
    monkeypatch.chdir(tmp_path)  # an empty cache_dir was the current folder: the caches were written here
    (tmp_path / "a_file").write_text("")
    (read_only / "cache").mkdir()
    cfg = compose_command("prepare", given)
    with pytest.raises(ValueError, match="^" + says) as refused:
        prepare(cfg)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ro"]  # nothing written


# ----- a data set's own splits: one empty, one with a bad image ----------------------------

def _custom_data(root, splits: dict[str, str]):
    """make_custom's data set (JSONL, 8 images) with each split renamed by `splits` (e.g. every
    test image made val); returns its facts."""
    facts = make_custom(root, "jsonl", n=8)
    path = facts["captions_file"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "split": splits.get(r["split"], r["split"])}) + "\n" for r in rows))
    return facts


def _custom_prepare(root, cache, *more):
    return compose_command("prepare", "data=custom", f"data.root={root}", "data.source.image_dir=images",
                           "data.source.image_size=16", f"cache_dir={cache}", *more)


def test_a_data_set_without_a_test_split_is_prepared_without_it_saying_so(tmp_path, caplog):
    _custom_data(tmp_path / "data", {"test": "val"})
    cfg = _custom_prepare(tmp_path / "data", tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="capgen.commands.prepare"):
        assert prepare(cfg) == {"train": 0, "val": 0, "test": 0}
    said = [r.getMessage() for r in caplog.records]
    [empty] = [m for m in said if "split has no images" in m]
    assert empty.startswith("the test split has no images (its captions or annotation file gives no image that split)")
    assert "test=false" in empty and "no image could be read" not in " ".join(said)
    assert said[-1].endswith("(no test split: it has no images)")
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {
        "vocab.json", "images_train.u8", "images_train.json", "images_val.u8", "images_val.json"}
    # Training reads train and val from the cache, and finds the test split empty (capgen-train then says test=false).
    dm = hydra.utils.instantiate(cfg.data, cache_dir=tmp_path / "cache")
    assert isinstance(dm.source("train"), CachedImages) and isinstance(dm.source("val"), CachedImages)
    assert len(dm.source("test")) == 0


def test_a_data_set_without_a_train_split_is_refused_before_anything_is_written(tmp_path):
    _custom_data(tmp_path / "data", {"train": "val"})
    with pytest.raises(ValueError, match=r"^data: the train split has no images \(its captions or annotation file gives "
                                         r"no image that split\), so there is no vocabulary to build and nothing to "
                                         r"train on"):
        prepare(_custom_prepare(tmp_path / "data", tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_bad_image_stops_prepare_with_one_fix_and_no_vocabulary_beside_unfinished_caches(tmp_path):
    facts = _custom_data(tmp_path / "data", {})
    broken = facts["splits"]["val"][0]
    data = facts["paths"][broken].read_bytes()
    facts["paths"][broken].write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(ValueError, match=rf"val image 0 \(image id \d+\): .*{broken}: corrupt or truncated image") as err:
        prepare(_custom_prepare(tmp_path / "data", tmp_path / "cache"))
    message = str(err.value)
    # One fix, the one that fits capgen-prepare (the user is running it already).
    assert message.count("data.on_bad_sample=skip") == 1 and "capgen-prepare" not in message, message
    # The train cache is complete, val is not: vocab.json, which goes with the finished caches, is not written yet.
    assert not (tmp_path / "cache" / "vocab.json").exists()
    assert (tmp_path / "cache" / "images_train.json").exists() and not (tmp_path / "cache" / "images_val.json").exists()
