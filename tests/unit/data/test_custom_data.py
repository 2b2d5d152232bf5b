"""data=custom: your own images with a JSONL, CSV or Karpathy-format captions file."""

import json
import logging
import math
import os
import pickle
import shlex

import numpy as np
import pytest

from capgen.data.custom import CustomSource, draw_splits
from capgen.data.datamodule import CaptionDataModule
from capgen.data.images import BadSampleError, load_rgb
from capgen.data.karpathy import FlickrSource

from helpers.fixtures_real import make_custom, make_flickr

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}


def _files(source, root):
    """The source's images as file names relative to root/images/."""
    return [os.path.relpath(p, root / "images") for p in source._paths]


def _ids(source):
    return [source.image_id(i) for i in range(len(source))]


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_rows_give_splits_ids_files_and_every_caption(tmp_path, form):
    facts = make_custom(tmp_path, form)
    for split in SPLITS:
        src = CustomSource(tmp_path, split, captions=facts["captions_file"].name, image_dir="images", image_size=24)
        files = facts["splits"][split]
        assert _files(src, tmp_path) == files  # in file order
        assert _ids(src) == [facts["ids"][f] for f in files]
        for i, f in enumerate(files):
            assert src.captions(i) == facts["captions"][f]  # every row of the image, in row order
            assert np.array_equal(src.image(i), load_rgb(facts["paths"][f], 24))


def test_csv_and_jsonl_of_the_same_rows_read_the_same(tmp_path):
    a, b = make_custom(tmp_path / "a", "jsonl"), make_custom(tmp_path / "b", "csv")
    for split in SPLITS:
        ja = CustomSource(tmp_path / "a", split, captions="captions.jsonl", image_dir="images")
        cb = CustomSource(tmp_path / "b", split, captions="captions.csv", image_dir="images")
        assert _ids(ja) == _ids(cb) and [ja.captions(i) for i in range(len(ja))] == [cb.captions(i) for i in range(len(cb))]
    assert a["ids"] == b["ids"]


def test_without_ids_an_image_id_is_its_position_among_the_sorted_file_names(tmp_path):
    facts = make_custom(tmp_path, "jsonl", with_ids=False, shuffle_rows=True)
    ranks = {f: k for k, f in enumerate(sorted(facts["captions"]))}
    for split in SPLITS:
        src = CustomSource(tmp_path, split, image_dir="images")
        assert _ids(src) == [ranks[f] for f in _files(src, tmp_path)]
        assert sorted(_files(src, tmp_path)) == sorted(facts["splits"][split])


def test_splits_drawn_by_fractions_are_disjoint_exact_and_independent_of_row_order(tmp_path):
    ordered = make_custom(tmp_path / "a", "jsonl", n=40, with_split=False)
    make_custom(tmp_path / "b", "csv", n=40, with_split=False, shuffle_rows=True)  # same images, rows shuffled

    def splits(root, captions, seed=0):
        return {s: set(_files(CustomSource(root, s, captions=captions, image_dir="images", split_fractions=FRACTIONS,
                                           split_seed=seed), root)) for s in SPLITS}

    a = splits(tmp_path / "a", "captions.jsonl")
    assert {len(a[s]) for s in SPLITS} == {20, 10}  # 40 images: 20 / 10 / 10, as the fractions say
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (20, 10, 10)
    assert a["train"] | a["val"] | a["test"] == set(ordered["captions"])
    assert not (a["train"] & a["val"] or a["train"] & a["test"] or a["val"] & a["test"])
    assert splits(tmp_path / "a", "captions.jsonl") == a  # deterministic
    assert splits(tmp_path / "b", "captions.csv") == a  # the row order does not matter
    other = splits(tmp_path / "a", "captions.jsonl", seed=1)
    assert other != a and {s: len(v) for s, v in other.items()} == {s: len(v) for s, v in a.items()}


def test_draw_splits_counts_round_half_up_and_every_file_gets_one_split():
    files = [f"img{k}.png" for k in range(7)]
    for fractions in ({"train": 0.8, "val": 0.1, "test": 0.1}, {"train": 1.0}, {"train": 0.5, "val": 0.5},
                      {"train": 0.1, "val": 0.45, "test": 0.45}):
        drawn = draw_splits(files, fractions, seed=3)
        assert sorted(drawn) == sorted(files)
        counts = {s: sum(v == s for v in drawn.values()) for s in SPLITS}
        for part in ("val", "test"):
            assert counts[part] == math.floor(7 * fractions.get(part, 0) + 0.5)
        assert draw_splits(list(reversed(files)), fractions, seed=3) == drawn


def test_a_karpathy_format_file_of_any_dataset_reads_as_karpathy_does(tmp_path):
    facts = make_custom(tmp_path, "karpathy")
    for split in SPLITS:
        src = CustomSource(tmp_path, split, captions="mydata.json")  # files in root/<filepath>: images/
        assert _files(src, tmp_path) == facts["splits"][split]  # restval images train too
        assert _ids(src) == [facts["ids"][f] for f in facts["splits"][split]]
        assert [src.captions(i) for i in range(len(src))] == [facts["captions"][f] for f in facts["splits"][split]]


def test_a_flickr_split_file_reads_the_same_through_data_custom(tmp_path):
    facts = make_flickr(tmp_path, "8k")
    for split in SPLITS:
        flickr = FlickrSource(tmp_path, split)
        custom = CustomSource(tmp_path, split, captions="dataset_flickr8k.json", image_dir=facts["image_dir"])
        assert custom._paths == flickr._paths and _ids(custom) == _ids(flickr)
        assert custom._captions == flickr._captions


def test_datamodule_vocabulary_from_train_and_pickling_for_workers(tmp_path):
    facts = make_custom(tmp_path, "jsonl")
    dm = CaptionDataModule(source=lambda split: CustomSource(tmp_path, split, image_dir="images", image_size=16),
                           batch_size=2)
    assert "zebra" not in dm.vocab.stoi and "dog" in dm.vocab.stoi  # zebra: val/test captions only
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (2, 3, 16, 16)
    src = pickle.loads(pickle.dumps(dm.source("test")))
    assert _ids(src) == [facts["ids"][f] for f in facts["splits"]["test"]]


def test_missing_image_and_empty_caption_follow_on_bad_sample(tmp_path, caplog):
    facts = make_custom(tmp_path, "jsonl")
    gone = facts["splits"]["train"][1]
    facts["paths"][gone].unlink()
    rows = [json.loads(line) for line in facts["captions_file"].read_text().splitlines()]
    emptied = facts["splits"]["train"][0]
    next(r for r in rows if r["file"] == emptied)["caption"] = "  "
    facts["captions_file"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadSampleError, match="empty"):
        CustomSource(tmp_path, "train", image_dir="images")
    with caplog.at_level(logging.WARNING):
        src = CustomSource(tmp_path, "train", image_dir="images", on_bad_sample="skip")
    assert gone not in _files(src, tmp_path) and len(src) == len(facts["splits"]["train"]) - 1
    assert src.captions(0) == facts["captions"][emptied][1:]
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert "in custom train" in line and "1 missing file" in line and "1 empty caption" in line


def test_two_files_under_one_id_errors_or_keeps_the_first(tmp_path):
    facts = make_custom(tmp_path, "jsonl")
    first, second = facts["splits"]["train"][0], facts["splits"]["test"][0]
    rows = [json.loads(line) for line in facts["captions_file"].read_text().splitlines()]
    for r in rows:
        if r["file"] == second:
            r["image_id"] = facts["ids"][first]
    facts["captions_file"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split in SPLITS:  # every split reads the whole file
        with pytest.raises(BadSampleError, match=f"image_id {facts['ids'][first]} is also that of"):
            CustomSource(tmp_path, split, image_dir="images")
    test = CustomSource(tmp_path, "test", image_dir="images", on_bad_sample="skip")
    assert second not in _files(test, tmp_path)
    assert first in _files(CustomSource(tmp_path, "train", image_dir="images", on_bad_sample="skip"), tmp_path)


def _rewrite(path, change):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[3].update(split="dev"), r"captions\.jsonl: line 4 has split 'dev'; a split is train, val or test"),
    (lambda rows: rows[-1].update(split="test" if rows[-1]["split"] != "test" else "val"),
     r"line \d+ gives .* the split '\w+', but line \d+ gave it the split '\w+'; an image has one split"),
    (lambda rows: rows[-1].update(image_id=5), r"gives .* the image_id 5, but line \d+ gave it the image_id \d+; an image has one id"),
    (lambda rows: rows[0].pop("image_id"), r"line 13 gives pic00.jpg the image_id 1000, but line 1 gave it no image_id"),
    (lambda rows: rows[2].pop("file"), r"line 3 has no file name"),
    (lambda rows: rows[2].pop("caption"), r"line 3 has no 'caption' field"),
    (lambda rows: rows[0].update(image_id="x1"), r"line 1 has image_id 'x1', which is not an integer"),
    (lambda rows: [r.pop("image_id") for r in rows if r["file"] == "pic00.jpg"], r"line 1 has no image_id, but other rows have one"),
    (lambda rows: [r.pop("split") for r in rows if r["file"] == "pic00.jpg"], r"line 1 has no split, but other rows have one"),
])
def test_a_captions_file_that_cannot_be_read_names_the_line_and_the_fix(tmp_path, change, message):
    facts = make_custom(tmp_path, "jsonl")
    _rewrite(facts["captions_file"], change)
    with pytest.raises(ValueError, match=message) as err:
        CustomSource(tmp_path, "train", image_dir="images")
    assert "\n" not in str(err.value)


def test_split_settings_that_do_not_fit_the_file_name_the_setting_and_the_fix(tmp_path):
    make_custom(tmp_path / "nosplit", "jsonl", with_split=False)
    with pytest.raises(ValueError, match=r"has no split column.*data\.source\.split_fractions='\{train:0\.8") as err:
        CustomSource(tmp_path / "nosplit", "train", image_dir="images")
    # The example is one argument when pasted into a shell (bare, bash expands its braces into three).
    assert shlex.split(str(err.value).rpartition(" with ")[2]) == ["data.source.split_fractions={train:0.8,val:0.1,test:0.1}"]
    make_custom(tmp_path / "split", "csv")
    with pytest.raises(ValueError, match="gives each image its split .* and data.source.split_fractions is set too"):
        CustomSource(tmp_path / "split", "train", captions="captions.csv", image_dir="images", split_fractions=FRACTIONS)
    make_custom(tmp_path / "kp", "karpathy")
    with pytest.raises(ValueError, match="Karpathy-format file, which gives every image its split"):
        CustomSource(tmp_path / "kp", "val", captions="mydata.json", split_fractions=FRACTIONS)
    for bad, why in (({"train": 0.8, "val": 0.1}, "add up to 1, they add up to 0.9"), ({"train": 0.5, "dev": 0.5}, "keys"),
                     ({"train": 1.5, "val": -0.5}, "from 0 to 1"), ({"val": 0.5, "test": 0.5}, "train needs")):
        with pytest.raises(ValueError, match=rf"data\.source\.split_fractions=.*{why}.*e\.g\. data\.source\.split_fractions"):
            CustomSource(tmp_path / "nosplit", "train", image_dir="images", split_fractions=bad)
    with pytest.raises(ValueError, match=r"data\.source\.captions=captions\.txt: a captions file must end in \.jsonl, \.csv"):
        CustomSource(tmp_path / "split", "train", captions="captions.txt")
    with pytest.raises(FileNotFoundError, match=r"captions file .*missing\.jsonl not found.*data\.source\.captions"):
        CustomSource(tmp_path / "split", "train", captions="missing.jsonl")
    with pytest.raises(FileNotFoundError, match=r"image folder .*pictures does not exist: data\.source\.image_dir=pictures "
                                                r"names it under data\.root .*; point data\.source\.image_dir at the folder"):
        CustomSource(tmp_path / "split", "train", captions="captions.csv", image_dir="pictures")


def test_a_csv_from_a_spreadsheet_with_a_byte_order_mark_and_empty_cells_reads(tmp_path):
    facts = make_custom(tmp_path, "csv", with_ids=False)
    text = facts["captions_file"].read_text()
    facts["captions_file"].write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # Excel's UTF-8 CSV
    src = CustomSource(tmp_path, "val", captions="captions.csv", image_dir="images")
    assert sorted(_files(src, tmp_path)) == sorted(facts["splits"]["val"])
    missing = tmp_path / "bad.csv"
    missing.write_text("path,text\na.jpg,a dog\n")
    with pytest.raises(ValueError, match=r"bad\.csv: the header row has no file or caption column \(it has \['path', 'text'\]\)"):
        CustomSource(tmp_path, "val", captions="bad.csv")


def test_splits_drawn_for_custom_data_are_logged_once_with_their_sizes(tmp_path, caplog):
    from capgen.data.custom import CustomSource

    from helpers.fixtures_real import make_custom

    make_custom(tmp_path, "jsonl", n=40, with_split=False)
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    with caplog.at_level(logging.INFO, logger="capgen.data.custom"):
        for split in ("train", "val", "test"):
            CustomSource(tmp_path, split, captions="captions.jsonl", image_dir="images", split_fractions=fractions,
                         split_seed=3)
    said = [r.getMessage() for r in caplog.records if "splits drawn" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("(split_seed=3): train 20, val 10, test 10 images"), said


# ----- inputs that become something else -------------------------------------------------
def _custom(tmp_path, rows: str, name: str = "captions.jsonl", data: bytes | None = None):
    """A custom data set: images a.png, b.png and the captions file `name` holding `rows` (or the bytes `data`)."""
    from PIL import Image

    (tmp_path / "images").mkdir(exist_ok=True)
    for file in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / file)
    (tmp_path / name).write_bytes(data if data is not None else rows.encode())
    return name


def _row(file, caption, split="train", **more):
    import json

    return json.dumps({"file": file, "caption": caption, "split": split, **more}) + "\n"


# What the COCO tokenizer drops entirely (it keeps "?!", "★" or ":)" as tokens, as the official one does).
@pytest.mark.parametrize("caption", ["🐶🛋️", "...", " - ; : ", "🌧️ 🌧️ 🌧️", "🇫🇷", "!", "\u200b"])
def test_captions_that_tokenize_to_nothing_are_empty_captions_under_on_bad_sample(tmp_path, caption):
    from capgen.data.custom import CustomSource
    from capgen.data.images import BadSampleError

    name = _custom(tmp_path, _row("a.png", "A red square.") + _row("a.png", caption) + _row("b.png", caption))
    with pytest.raises(BadSampleError, match=r"captions\.jsonl \(lines 1, 2,.*caption 2 of 2 .*has no words once tokenized"):
        CustomSource(tmp_path, "train", captions=name, image_dir="images")
    kept = CustomSource(tmp_path, "train", captions=name, image_dir="images", on_bad_sample="skip")
    # a.png keeps its caption with words; b.png has none left, like an image whose captions are all ""
    assert len(kept) == 1 and kept.captions(0) == ["A red square."]


@pytest.mark.parametrize("bad, message", [
    ("", r"caption 2 of 2 is empty \(''\)"),
    (5, r"caption 2 of 2 is not text but a int \(5\)"),
    (["a dog"], r"caption 2 of 2 is not text but a list"),
    (None, r"caption 2 of 2 is missing"),
])
def test_a_bad_caption_is_named_by_its_own_line_among_its_images_lines(tmp_path, bad, message):
    """An image's captions may sit on lines far apart: the message lists the image's lines, so
    its caption k (counted from 1) is found on the k-th of them, and says what is wrong with it."""
    from capgen.data.custom import CustomSource
    from capgen.data.images import BadSampleError

    rows = _row("a.png", "A red square.") + _row("b.png", "A red circle.") + _row("a.png", bad)
    name = _custom(tmp_path, rows)
    with pytest.raises(BadSampleError, match=r"captions\.jsonl \(lines 1, 3, image_id \d+, a\.png\).*" + message):
        CustomSource(tmp_path, "train", captions=name, image_dir="images")


def test_captions_with_words_in_any_script_are_kept(tmp_path):
    from capgen.data.custom import CustomSource

    kept = ("A dog 🐶.", "Ein Hund.", "犬", "un chien (brun)", "?!", "★")  # the tokenizer keeps a token of each
    rows = "".join(_row("a.png", c) for c in kept)
    src = CustomSource(tmp_path, "train", captions=_custom(tmp_path, rows), image_dir="images")
    assert src.captions(0) == list(kept)


UTF8_CSV = "file,caption,split\na.png,A red square.,train\nb.png,A red circle.,train\n"


BAD_FILES = [
    # (file name, bytes, what the message must say)
    ("captions.csv", UTF8_CSV.encode("utf-16"), r"captions\.csv: the captions file starts with a UTF-16 .*save the captions file as UTF-8"),
    ("captions.csv", UTF8_CSV.encode("utf-16-le"), r"captions\.csv: the captions file holds NUL bytes \(line 1\).*UTF-8"),
    ("captions.csv", UTF8_CSV.replace("b.png", "\ufeffb.png").encode(), r"captions\.csv: line 3 holds a byte-order mark"),
    ("captions.csv", "file,caption,split\na.png,Un carré rouge.,train\n".encode("latin-1"), r"captions\.csv: line 2 is not UTF-8"),
    ("captions.csv", b"file,caption,split\n", r"captions\.csv has no caption rows under its header.*a\.jpg,A dog"),
    ("captions.jsonl", b"\n\n", r"captions\.jsonl has no caption rows"),
    ("captions.jsonl", _row("a.png", "A red square.", image_id=2**64).encode(),
     r"captions\.jsonl: line 1 has image_id 18446744073709551616, which does not fit in 64 bits"),
    ("captions.csv", b"file,caption,split,image_id\na.png,A square.,train,-99999999999999999999\n",
     r"captions\.csv: line 2 has image_id -99999999999999999999, which does not fit in 64 bits"),
    ("split.json", b'{"dataset": "mine", "images": [{"filename": "a.png", "split": "train", "imgid": 1e20, '
                   b'"sentences": [{"raw": "A square."}]}]}', r"split\.json: image 0 has image_id 100000000000000000000"),
    ("split.json", '{"dataset": "mine", "images": []}'.encode("utf-16"), r"split\.json: the captions file starts with a UTF-16|split\.json: .*UTF-16"),
]


@pytest.mark.parametrize("name, data, message", BAD_FILES)
def test_captions_files_that_would_read_as_something_else_name_the_file_the_line_and_the_fix(tmp_path, name, data, message):
    from capgen.data.custom import CustomSource

    _custom(tmp_path, "", name=name, data=data)
    with pytest.raises(ValueError, match=message) as err:
        CustomSource(tmp_path, "train", captions=name, image_dir="images")
    assert "\n" not in str(err.value)


def test_a_utf8_byte_order_mark_at_the_start_is_read_as_a_spreadsheet_writes_it(tmp_path):
    from capgen.data.custom import CustomSource

    for name, text in (("captions.csv", UTF8_CSV), ("captions.jsonl", _row("a.png", "A red square."))):
        _custom(tmp_path, "", name=name, data=b"\xef\xbb\xbf" + text.encode())
        assert CustomSource(tmp_path, "train", captions=name, image_dir="images").captions(0) == ["A red square."]


# ----- a CSV row's cells against its header ------------------------------------------------
CUT = "A red square, seen from above, on a sofa"  # a caption with commas, written unquoted below


@pytest.mark.parametrize("header, tail, cells, columns", [
    ("file,caption", "", 4, 2),  # no split column: the caption used to be cut at its first comma
    ("file,caption,split", ",train", 5, 3),  # with one: the tail used to be read as the split
])
def test_a_csv_row_with_more_cells_than_columns_is_refused_naming_the_line_and_the_quoting(tmp_path, header, tail, cells,
                                                                                           columns):
    import csv

    from capgen.data.custom import CustomSource

    rows = f"{header}\nb.png,A red circle.{tail}\na.png,{CUT}{tail}\n"
    name = _custom(tmp_path, "", name="captions.csv", data=rows.encode())
    fractions = None if tail else FRACTIONS
    for policy in ("error", "skip"):  # not a bad sample: the file cannot be read as it is meant
        with pytest.raises(ValueError, match=rf"captions\.csv: line 3 has {cells} cells for {columns} columns "
                                             rf"\({header}\): quote a caption that contains commas, \"a, b\"") as err:
            CustomSource(tmp_path, "train", captions=name, image_dir="images", split_fractions=fractions,
                         on_bad_sample=policy)
    message = str(err.value)
    assert "\n" not in message
    # The line it suggests reads as the row was meant: the whole caption in one cell.
    suggested = message.split("the line reads: ", 1)[1].split(". A spreadsheet", 1)[0]
    assert next(csv.reader([suggested])) == ["a.png", CUT] + ([tail[1:]] if tail else [])


def test_a_csv_row_with_trailing_commas_is_told_to_remove_them(tmp_path):
    from capgen.data.custom import CustomSource

    name = _custom(tmp_path, "", name="captions.csv", data=b"file,caption,split\na.png,A red square.,train,,\n")
    with pytest.raises(ValueError, match=r"line 2 has 5 cells for 3 columns .*if its last 2 cells are only trailing "
                                         r"commas, remove them"):
        CustomSource(tmp_path, "train", captions=name, image_dir="images")
    # A cell past the split: read as the caption's, the split would be "extra": no line is offered as the fix.
    (tmp_path / "past").mkdir()
    name = _custom(tmp_path / "past", "", name="captions.csv", data=b"file,caption,split\na.png,A red square.,train,extra\n")
    with pytest.raises(ValueError, match=r"line 2 has 4 cells for 3 columns .*give the row one cell per column of the "
                                         r"header \(file,caption,split\)") as err:
        CustomSource(tmp_path / "past", "train", captions=name, image_dir="images")
    assert "the line reads" not in str(err.value)


def test_a_csv_row_may_leave_out_optional_cells_but_not_its_caption(tmp_path):
    from capgen.data.custom import CustomSource

    # Optional columns left out at the end of a row are empty cells: image ids are then positions.
    rows = "file,caption,image_id\na.png,A red square.\nb.png,A red circle.,\n"
    name = _custom(tmp_path, "", name="captions.csv", data=rows.encode())
    src = CustomSource(tmp_path, "train", captions=name, image_dir="images", split_fractions={"train": 1.0})
    assert sorted(src.captions(i)[0] for i in range(len(src))) == ["A red circle.", "A red square."]
    assert sorted(src.image_id(i) for i in range(len(src))) == [0, 1]
    name = _custom(tmp_path, "", name="cut.csv", data=b"file,caption,split\na.png,A red square.,train\nb.png\n")
    for policy in ("error", "skip"):
        with pytest.raises(ValueError, match=r"cut\.csv: line 3 has 1 cell for 3 columns \(file,caption,split\), so it "
                                             r"has no caption; give every row its file and caption"):
            CustomSource(tmp_path, "train", captions=name, image_dir="images", on_bad_sample=policy)


def test_a_csv_split_with_surrounding_spaces_reads_as_the_split(tmp_path):
    from capgen.data.custom import CustomSource

    rows = "file,caption,split\na.png,A red square.,train \nb.png,A red circle., val\n"  # as a spreadsheet leaves them
    name = _custom(tmp_path, "", name="captions.csv", data=rows.encode())
    for split, file in (("train", "a.png"), ("val", "b.png")):
        src = CustomSource(tmp_path, split, captions=name, image_dir="images")
        assert _files(src, tmp_path) == [file]


@pytest.mark.parametrize("separator, named", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_separated_by_something_else_than_commas_is_named(tmp_path, separator, named):
    from capgen.data.custom import CustomSource

    rows = separator.join(["file", "caption", "split"]) + "\n" + separator.join(["a.png", "A red square.", "train"]) + "\n"
    name = _custom(tmp_path, "", name="captions.csv", data=rows.encode())
    with pytest.raises(ValueError, match=rf"the header row has no file or caption column .*; its cells are separated by "
                                         rf"{named}, but a captions CSV separates them by commas"):
        CustomSource(tmp_path, "train", captions=name, image_dir="images")


def test_the_captions_file_extension_message_has_no_doubled_word(tmp_path):
    import re

    make_custom(tmp_path, "csv")
    with pytest.raises(ValueError, match=r"not '\.txt'; see the README's 'Your own data'") as err:
        CustomSource(tmp_path, "train", captions="captions.txt")
    assert not re.search(r"\b(\w+) \1\b", str(err.value)), str(err.value)


def test_a_windows_path_in_a_captions_file_is_told_to_use_slashes(tmp_path):
    from PIL import Image

    from capgen.data.custom import CustomSource

    (tmp_path / "images" / "photos").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "photos" / "a.png")
    (tmp_path / "captions.jsonl").write_text(_row("photos\\a.png", "A red square."))
    with pytest.raises(BadSampleError, match=r"photos\\a\.png\) does not exist: its name holds '\\', which is not a folder "
                                             r"separator here \(only '/' is\); write that entry's file as photos/a\.png"):
        CustomSource(tmp_path, "train", image_dir="images")
    (tmp_path / "captions.jsonl").write_text(_row("photos/a.png", "A red square."))
    assert len(CustomSource(tmp_path, "train", image_dir="images")) == 1  # the fix it gives works


def test_an_image_file_gone_after_its_split_was_read_is_told_missing_now_and_to_put_it_back(tmp_path):
    import functools

    facts = make_custom(tmp_path)
    factory = functools.partial(CustomSource, captions=facts["captions_file"].name, image_dir="images", image_size=24)
    dm = CaptionDataModule(factory, batch_size=1, root=str(tmp_path), on_bad_sample="error")
    loader = dm.train_dataloader()  # the train split read: every file was there
    for path in facts["paths"].values():
        if path.name in {os.path.basename(f) for f in facts["splits"]["train"]}:
            path.unlink()  # moved away, say, while the run trains
    with pytest.raises(BadSampleError) as err:
        next(iter(loader))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "images"))
    assert ": missing now, though it was there when the train split was read (moved, deleted or its drive unmounted " \
           "since); put the file back; or, if it is gone for good, set data.on_bad_sample=skip" in message
    assert "delete or replace" not in message  # nothing to delete: it is not a bad file
    # Read outside training (validation, capgen-eval), the same news with the same fix.
    gone = facts["paths"][facts["splits"]["val"][0]]
    source = dm.source("val")
    gone.unlink()
    with pytest.raises(BadSampleError, match=r"missing now, though it was there when the val split was read .*put the "
                                             r"file back; or, if it is gone for good, set data.on_bad_sample=skip"):
        source.image(0)
    # A file still there but unreadable keeps the fix for a bad file; so does a link to nothing.
    truncated = facts["paths"][facts["splits"]["val"][1]]
    truncated.write_bytes(b"")
    with pytest.raises(BadSampleError, match="empty file .*delete or replace the file"):
        source.image(1)
    truncated.unlink()
    truncated.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(BadSampleError, match="a symbolic link to .*nowhere.jpg, which does not exist.*delete or replace"):
        source.image(1)
