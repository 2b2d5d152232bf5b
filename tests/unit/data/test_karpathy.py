import functools
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch

from capgen.data.datamodule import CaptionDataModule
from capgen.data.images import BadSampleError, load_rgb
from capgen.data.karpathy import Coco2014Source, FlickrSource
from capgen.tokenizer import tokenize

from helpers.fixtures_real import (
    LONG_WORDS,
    PUNCTUATED,
    RESTVAL_WORD,
    VAL_TEST_WORD,
    edit_json,
    make_coco2014,
    make_flickr,
    make_odd_images,
)

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A COCO fixture the tests only read; tests that plant faults build their own."""
    root = tmp_path_factory.mktemp("coco")
    return root, make_coco2014(root)


def _ids(source):
    return [source.image_id(i) for i in range(len(source))]


def _summary_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]


@pytest.mark.parametrize("split", SPLITS)
def test_karpathy_splits_ids_paths_and_all_references(coco, split):
    root, facts = coco
    src = Coco2014Source(root=str(root), split=split, karpathy_json="dataset_coco.json", image_size=32)
    assert _ids(src) == facts["karpathy"][split]
    for i, image_id in enumerate(_ids(src)):
        assert src.captions(i) == facts["captions"][image_id] and 5 <= len(src.captions(i)) <= 7
        # The pixels come from that image's own file (each fixture image is a distinct pattern).
        assert np.array_equal(src.image(i), load_rgb(facts["paths"][image_id], 32))


def test_karpathy_train_is_train_plus_restval_and_splits_are_disjoint(coco):
    root, facts = coco
    ids = {s: set(_ids(Coco2014Source(root, s, karpathy_json=str(facts["karpathy_json"])))) for s in SPLITS}
    assert ids["train"] >= set(facts["official"]["train"])  # absolute karpathy_json works too
    assert ids["train"] - set(facts["official"]["train"]) <= set(facts["official"]["val"])  # restval
    assert len(ids["train"]) > len(facts["official"]["train"])
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_official_splits_group_shuffled_annotations_and_test_is_val2014(coco, caplog):
    root, facts = coco
    with caplog.at_level(logging.WARNING, logger="capgen.data.karpathy"):
        train, val, test = (Coco2014Source(root, s) for s in SPLITS)
    # Said once, by the test split, where the test scores are made: they are val scores here.
    assert [r.getMessage() for r in caplog.records if "val scores" in r.getMessage()] == [
        "data.source.karpathy_json=null: COCO's official splits, whose test split is val2014 (the test2014 images have "
        "no public captions), the images that chose the best checkpoint: its test scores are val scores. Karpathy's "
        "splits (dataset_coco.json) hold out a test split."]
    assert _ids(train) == facts["official"]["train"]
    assert _ids(val) == _ids(test) == facts["official"]["val"]
    for src in (train, val):
        for i, image_id in enumerate(_ids(src)):
            assert sorted(src.captions(i)) == sorted(facts["captions"][image_id])


def test_karpathy_needs_no_official_annotations(tmp_path):
    facts = make_coco2014(tmp_path, odd_images=False)
    shutil.rmtree(tmp_path / "annotations")
    assert _ids(Coco2014Source(tmp_path, "val", karpathy_json="dataset_coco.json")) == facts["karpathy"]["val"]


def test_long_and_punctuated_captions_are_kept_whole(coco):
    root, _ = coco
    src = Coco2014Source(root, "train", karpathy_json="dataset_coco.json")
    captions = [c for i in range(len(src)) for c in src.captions(i)]
    assert PUNCTUATED in captions
    assert sum(len(c.split()) == LONG_WORDS for c in captions) == len(src)  # one per image


@pytest.mark.parametrize("version", ["8k", "30k"])
def test_flickr_splits_default_image_dir_and_imgids(tmp_path, version):
    facts = make_flickr(tmp_path, version)
    for split in SPLITS:
        src = FlickrSource(tmp_path, split, karpathy_json=f"dataset_flickr{version}.json", image_size=16)
        assert src.dataset == f"flickr{version}"
        assert _ids(src) == facts["splits"][split]
        assert [src.captions(i) for i in range(len(src))] == [facts["captions"][j] for j in facts["splits"][split]]
        for i, imgid in enumerate(facts["splits"][split]):  # read from <image_dir>/<its file>
            assert np.array_equal(src.image(i), load_rgb(facts["paths"][imgid], 16))
        assert src.image(0).shape == (16, 16, 3)


def test_flickr_image_dir_can_be_given(tmp_path):
    facts = make_flickr(tmp_path, "8k")
    (tmp_path / facts["image_dir"]).rename(tmp_path / "images")
    assert _ids(FlickrSource(tmp_path, "test", image_dir="images")) == facts["splits"]["test"]


def test_vocabulary_comes_from_train_and_restval_only_and_encode_truncates(coco):
    root, facts = coco
    dm = CaptionDataModule(source=functools.partial(Coco2014Source, root=str(root), karpathy_json="dataset_coco.json"),
                           max_len=16, min_freq=1)
    assert VAL_TEST_WORD not in dm.vocab.stoi and RESTVAL_WORD in dm.vocab.stoi
    assert any(VAL_TEST_WORD in tokenize(c) for c in dm.references("val")[facts["karpathy"]["val"][0]])
    long_caption = facts["captions"][facts["karpathy"]["train"][0]][0]
    assert len(tokenize(long_caption)) > 16 and len(dm.vocab.encode(long_caption)) == 16 + 2


def test_datamodule_batches_stack_every_image_including_odd_files(coco):
    root, facts = coco
    dm = CaptionDataModule(source=functools.partial(Coco2014Source, root=str(root), karpathy_json="dataset_coco.json",
                                                    image_size=24), batch_size=4, max_len=16)
    train = next(iter(dm.train_dataloader()))
    assert train.images.shape == (4, 3, 24, 24) and train.images.dtype == torch.uint8
    val_ids = []
    for batch in dm.val_dataloader():
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (3, 24, 24)
        val_ids += batch.image_ids.tolist()
    assert val_ids == facts["karpathy"]["val"]
    # every image of the official splits decodes, the odd files among them
    for split in ("train", "val"):
        src = Coco2014Source(root, split, image_size=24)
        assert all(src.image(i).shape == (24, 24, 3) for i in range(len(src)))


def test_sources_pickle_for_dataloader_workers(coco):
    root, _ = coco
    src = Coco2014Source(root, "val", karpathy_json="dataset_coco.json", on_bad_sample="skip", exclude_ids=[1])
    again = pickle.loads(pickle.dumps(src))
    assert _ids(again) == _ids(src) and again.captions(1) == src.captions(1) and (again.image(0) == src.image(0)).all()


def test_missing_root_annotation_split_file_and_image_folder_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*Data sets"):
        Coco2014Source(tmp_path / "nowhere", "train")
    make_coco2014(tmp_path, odd_images=False)
    (tmp_path / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/captions_val2014\.json.*download_coco\.sh"):
        Coco2014Source(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=r"dataset_flickr8k\.json.*caption_datasets\.zip"):
        FlickrSource(tmp_path, "train")
    shutil.rmtree(tmp_path / "train2014")
    with pytest.raises(FileNotFoundError, match="train2014"):
        Coco2014Source(tmp_path, "train")


def test_flickrs_own_token_file_is_named_as_a_format_capgen_does_not_read_not_as_damaged(tmp_path):
    facts = make_flickr(tmp_path, "8k")
    # Flickr8k.token.txt as the official download ships it: <file>#<k>\t<caption> per line.
    names = {imgid: path.name for imgid, path in facts["paths"].items()}
    (tmp_path / "Flickr8k.token.txt").write_text("".join(
        f"{names[i]}#{k}\t{c}\n" for i, captions in facts["captions"].items() for k, c in enumerate(captions)))
    with pytest.raises(ValueError, match=r"Flickr8k\.token\.txt is not a JSON file .*data\.source\.karpathy_json must "
                                         r"name dataset_flickr8k\.json or dataset_flickr30k\.json from Karpathy's "
                                         r"caption_datasets\.zip; the text files of the official downloads .* are not "
                                         r"read\. .*data=custom") as err:
        FlickrSource(tmp_path, "train", karpathy_json="Flickr8k.token.txt")
    assert "damaged" not in str(err.value) and "\n" not in str(err.value)
    # A Karpathy file cut short (a broken download) is still called damaged.
    text = facts["karpathy_json"].read_text()
    facts["karpathy_json"].write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"dataset_flickr8k\.json: not valid JSON .*the file is damaged"):
        FlickrSource(tmp_path, "train")


def test_a_renamed_flickr_image_folder_names_the_setting_and_the_folder_that_is_there(tmp_path):
    make_flickr(tmp_path, "8k")
    (tmp_path / "Flicker8k_Dataset").rename(tmp_path / "Flickr8k_Dataset")  # as many mirrors spell it
    with pytest.raises(FileNotFoundError, match=r"image folder .*Flicker8k_Dataset does not exist: "
                                                r"data\.source\.image_dir=Flicker8k_Dataset names .*data\.root holds the "
                                                r"folder Flickr8k_Dataset\. Give data\.source\.image_dir=.*e\.g\. "
                                                r"data\.source\.image_dir=Flickr8k_Dataset") as err:
        FlickrSource(tmp_path, "train", image_dir="Flicker8k_Dataset")
    assert "COCO" not in str(err.value) and "download_coco" not in str(err.value)
    assert len(FlickrSource(tmp_path, "train", image_dir="Flickr8k_Dataset")) > 0  # the fix it gives works


def test_coco_2017_files_where_2014_ones_are_expected_are_named(tmp_path):
    make_coco2014(tmp_path, odd_images=False)
    annotations = tmp_path / "annotations"
    (annotations / "captions_train2014.json").rename(annotations / "captions_train2017.json")
    with pytest.raises(FileNotFoundError, match=r"captions_train2014\.json not found: data\.root=.* must hold .*; it "
                                                r"holds COCO 2017's annotations/captions_train2017\.json, but capgen "
                                                r"reads COCO 2014"):
        Coco2014Source(tmp_path, "train", karpathy_json=None)
    (tmp_path / "train2014").rename(tmp_path / "train2017")
    with pytest.raises(FileNotFoundError, match=r"image folder .*train2014 does not exist: COCO 2014's images unpack to "
                                                r"train2014/ and val2014/ under data\.root=.*; it holds COCO 2017's "
                                                r"train2017, .*but capgen reads COCO 2014"):
        Coco2014Source(tmp_path, "train", karpathy_json="dataset_coco.json")


def test_a_split_file_for_another_data_set_is_refused(tmp_path):
    make_flickr(tmp_path, "30k")
    with pytest.raises(ValueError, match=r"dataset_flickr30k\.json.*'flickr30k'.*coco"):
        Coco2014Source(tmp_path, "train", karpathy_json="dataset_flickr30k.json")


def test_missing_image_file_errors_or_is_skipped_with_one_summary(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    gone = facts["karpathy"]["test"][0]
    facts["paths"][gone].unlink()
    with pytest.raises(BadSampleError) as err:
        Coco2014Source(tmp_path, "test", karpathy_json="dataset_coco.json")
    assert str(facts["paths"][gone]) in str(err.value) and f"cocoid {gone}" in str(err.value)
    with caplog.at_level(logging.WARNING):
        src = Coco2014Source(tmp_path, "test", karpathy_json="dataset_coco.json", on_bad_sample="skip")
    assert _ids(src) == [i for i in facts["karpathy"]["test"] if i != gone]
    n = len(facts["karpathy"]["test"])
    [line] = _summary_lines(caplog)
    assert f"skipped 1 of {n} images in coco2014 test" in line and "1 missing file" in line
    assert str(facts["paths"][gone]) in line


def test_empty_captions_are_dropped_and_captionless_images_skipped(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    one_empty, all_empty = facts["official"]["val"][:2]

    def blank(data):
        for a in data["annotations"]:
            if a["image_id"] == all_empty:
                a["caption"] = "  \n"
        first = next(a for a in data["annotations"] if a["image_id"] == one_empty)
        first["caption"] = ""

    ann = tmp_path / "annotations" / "captions_val2014.json"
    edit_json(ann, blank)
    with pytest.raises(BadSampleError) as err:
        Coco2014Source(tmp_path, "val")
    assert str(ann) in str(err.value) and f"image id {one_empty}" in str(err.value) and "empty" in str(err.value)

    with caplog.at_level(logging.WARNING):
        src = Coco2014Source(tmp_path, "val", on_bad_sample="skip")
    ids = _ids(src)
    assert all_empty not in ids and one_empty in ids and len(ids) == len(facts["official"]["val"]) - 1
    assert len(src.captions(ids.index(one_empty))) == len(facts["captions"][one_empty]) - 1
    assert "" not in src.captions(ids.index(one_empty))
    [line] = _summary_lines(caplog)
    n_blank = 1 + len(facts["captions"][all_empty])
    assert f"skipped 1 of {len(facts['official']['val'])} images" in line
    assert f"{n_blank} empty captions" in line and "1 image without captions" in line


def test_excluded_ids_are_left_out_under_either_policy(coco):
    root, facts = coco
    drop = facts["karpathy"]["val"][0]
    for policy in ("error", "skip"):
        src = Coco2014Source(root, "val", karpathy_json="dataset_coco.json", on_bad_sample=policy, exclude_ids=[drop])
        assert _ids(src) == facts["karpathy"]["val"][1:]


def test_an_image_that_breaks_after_indexing_raises_under_both_policies(tmp_path):
    facts = make_coco2014(tmp_path, odd_images=False)
    odd = make_odd_images(tmp_path / "odd")
    for policy in ("error", "skip"):
        src = Coco2014Source(tmp_path, "val", on_bad_sample=policy)
        facts["paths"][src.image_id(0)].write_bytes(odd["truncated"].read_bytes())
        with pytest.raises(BadSampleError, match=str(facts["paths"][src.image_id(0)])):
            src.image(0)


def test_bad_arguments_name_what_to_change(coco):
    root, _ = coco
    with pytest.raises(ValueError, match="data.on_bad_sample"):
        Coco2014Source(root, "train", on_bad_sample="ignore")
    with pytest.raises(ValueError, match="split"):
        Coco2014Source(root, "restval")
    with pytest.raises(ValueError, match="image_size"):
        Coco2014Source(root, "val", image_size=0)


def _set_id(key, old, new):
    """An edit_json change: the image entry whose `key` is `old` gets id `new`."""
    return lambda data: next(e for e in data["images"] if e[key] == old).update({key: new})


def _assert_names_duplicate(message, *parts):
    assert "\n" not in message  # one paragraph
    for part in (*parts, "is also that of", "its own id", "data.on_bad_sample=skip"):
        assert part in message, part


def test_official_coco_repeated_image_id_errors_or_keeps_the_first_entry(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    first, second = facts["official"]["val"][1], facts["official"]["val"][3]
    ann = tmp_path / "annotations" / "captions_val2014.json"
    edit_json(ann, _set_id("id", second, first))  # the second file now claims the first one's id
    with pytest.raises(BadSampleError) as err:
        Coco2014Source(tmp_path, "val")
    _assert_names_duplicate(str(err.value), str(ann), f"image id {first}", facts["paths"][first].name,
                            facts["paths"][second].name)

    with caplog.at_level(logging.WARNING):
        src = Coco2014Source(tmp_path, "val", on_bad_sample="skip", image_size=16)
    ids = _ids(src)
    assert ids == [i for i in facts["official"]["val"] if i != second]
    k = ids.index(first)
    assert sorted(src.captions(k)) == sorted(facts["captions"][first])
    assert np.array_equal(src.image(k), load_rgb(facts["paths"][first], 16))  # the first file, not the second
    [line] = _summary_lines(caplog)
    n = len(facts["official"]["val"])
    assert f"skipped 1 of {n} images in coco2014 val" in line and "1 duplicate image id" in line


def test_karpathy_repeated_cocoid_within_a_split_errors_or_keeps_the_first_entry(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    first, second = facts["karpathy"]["test"]
    kp = tmp_path / "dataset_coco.json"
    edit_json(kp, _set_id("cocoid", second, first))
    for split in SPLITS:  # every split reads the whole file, so every one of them stops
        with pytest.raises(BadSampleError) as err:
            Coco2014Source(tmp_path, split, karpathy_json="dataset_coco.json")
        _assert_names_duplicate(str(err.value), str(kp), f"cocoid {first}", facts["paths"][first].name,
                                facts["paths"][second].name, "split test")

    with caplog.at_level(logging.WARNING):
        ids = {s: _ids(Coco2014Source(tmp_path, s, karpathy_json="dataset_coco.json", on_bad_sample="skip"))
               for s in SPLITS}
    assert ids == {"train": facts["karpathy"]["train"], "val": facts["karpathy"]["val"], "test": [first]}
    [line] = _summary_lines(caplog)
    assert "skipped 1 of 2 images in coco2014 test" in line and "1 duplicate image id" in line


def test_karpathy_cocoid_in_two_splits_keeps_the_first_entry_in_the_file(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    tested, trained = facts["karpathy"]["test"][0], facts["official"]["train"][2]
    kp = tmp_path / "dataset_coco.json"
    # The file lists the val2014 images (the test split among them) first: the train entry repeats.
    edit_json(kp, _set_id("cocoid", trained, tested))
    for split in SPLITS:
        with pytest.raises(BadSampleError) as err:
            Coco2014Source(tmp_path, split, karpathy_json="dataset_coco.json")
        _assert_names_duplicate(str(err.value), str(kp), f"cocoid {tested}", facts["paths"][tested].name,
                                facts["paths"][trained].name, "split test", "split train")

    with caplog.at_level(logging.WARNING):
        ids = {s: _ids(Coco2014Source(tmp_path, s, karpathy_json="dataset_coco.json", on_bad_sample="skip"))
               for s in SPLITS}
    assert ids["test"] == facts["karpathy"]["test"] and ids["val"] == facts["karpathy"]["val"]
    assert ids["train"] == [i for i in facts["karpathy"]["train"] if i != trained]
    [line] = _summary_lines(caplog)  # counted once, by the split that drops it
    assert "in coco2014 train" in line and "1 duplicate image id" in line


def _set_file(key, image_id, name):
    """An edit_json change: the image entry whose `key` is `image_id` names the file `name`."""
    return lambda data: next(e for e in data["images"] if e[key] == image_id).update(
        {"file_name" if "file_name" in data["images"][0] else "filename": name})


def test_official_coco_two_ids_naming_one_file_errors_or_keeps_the_first_entry(tmp_path, caplog):
    facts = make_coco2014(tmp_path, odd_images=False)
    first, second = facts["official"]["val"][1], facts["official"]["val"][3]
    ann = tmp_path / "annotations" / "captions_val2014.json"
    edit_json(ann, _set_file("id", second, facts["paths"][first].name))  # the second entry names the first's file
    with pytest.raises(BadSampleError) as err:
        Coco2014Source(tmp_path, "val")
    message = str(err.value)
    assert "\n" not in message and str(ann) in message and f"image id {second}" in message
    assert f"its image file {facts['paths'][first]} is also that of image" in message and "data.on_bad_sample=skip" in message
    with caplog.at_level(logging.WARNING):
        src = Coco2014Source(tmp_path, "val", on_bad_sample="skip", image_size=16)
    assert _ids(src) == [i for i in facts["official"]["val"] if i != second]
    [line] = _summary_lines(caplog)
    assert "1 duplicate image file" in line


def test_karpathy_one_file_in_train_and_test_is_found(tmp_path, caplog):
    """The same picture trained on and tested under two cocoids: a leak the ids alone miss."""
    facts = make_coco2014(tmp_path, odd_images=False)
    tested, trained = facts["karpathy"]["test"][0], facts["official"]["train"][2]
    kp = tmp_path / "dataset_coco.json"

    def same_file(data):
        entries = {e["cocoid"]: e for e in data["images"]}
        entries[trained].update(filepath=entries[tested]["filepath"], filename=entries[tested]["filename"])

    edit_json(kp, same_file)
    for split in SPLITS:  # every split reads the whole file
        with pytest.raises(BadSampleError, match=f"its image file .*{facts['paths'][tested].name} is also that of"):
            Coco2014Source(tmp_path, split, karpathy_json="dataset_coco.json")
    with caplog.at_level(logging.WARNING):
        ids = {s: _ids(Coco2014Source(tmp_path, s, karpathy_json="dataset_coco.json", on_bad_sample="skip"))
               for s in SPLITS}
    assert ids["test"] == facts["karpathy"]["test"]
    assert ids["train"] == [i for i in facts["karpathy"]["train"] if i != trained]


def test_flickr_repeated_imgid_follows_the_same_rule(tmp_path):
    facts = make_flickr(tmp_path, "8k")
    kept, repeat = facts["splits"]["val"][0], facts["splits"]["train"][1]
    edit_json(tmp_path / "dataset_flickr8k.json", _set_id("imgid", repeat, kept))
    with pytest.raises(BadSampleError) as err:
        FlickrSource(tmp_path, "test")
    _assert_names_duplicate(str(err.value), "dataset_flickr8k.json", f"imgid {kept}", facts["paths"][kept].name,
                            facts["paths"][repeat].name)
    train = FlickrSource(tmp_path, "train", on_bad_sample="skip")
    assert _ids(train) == [i for i in facts["splits"]["train"] if i != repeat]


def test_an_image_id_that_is_not_an_integer_names_the_entry(tmp_path):
    make_coco2014(tmp_path, odd_images=False)
    edit_json(tmp_path / "dataset_coco.json", lambda data: data["images"][0].update(cocoid="abc"))
    with pytest.raises(ValueError, match=r"dataset_coco\.json: image 0 has cocoid 'abc', which is not an integer"):
        Coco2014Source(tmp_path, "test", karpathy_json="dataset_coco.json")
