"""capgen-caption's file handling (capgen.commands.caption) without a model: the figures'
file names and the images a spec names."""

import logging
import os

import pytest
from PIL import Image

from capgen.commands.caption import _unique_stem, find_images
from capgen.data.images import BadSampleError, load_rgb


def test_figure_names_fit_a_file_name_and_stay_unique(tmp_path, caplog):
    """A legal 249-byte image name (or 90 CJK characters) would make `<stem>_attention.png`
    longer than 255 bytes: its stem is cut, with a hash that keeps names cut alike apart."""
    long = "x" * 245
    names = [f"{long}.jpg", f"{long}.png", f"{long}a.jpg", f"{long}b.jpg", "字" * 90 + ".jpg", "short.jpg", "short.png"]
    taken = set()
    with caplog.at_level(logging.INFO, logger="capgen.commands.caption"):
        stems = [_unique_stem(tmp_path / n, taken) for n in names]
    assert len(set(stems)) == len(stems)
    assert stems[-2:] == ["short", "short_2"]  # names that fit are kept as they are
    for name, stem in zip(names[:5], stems[:5]):
        assert stem[:60] == name[:60]  # the image's name still shows
        for suffix in ("png", "gif"):
            figure = tmp_path / f"{stem}_attention.{suffix}"
            assert len(os.fsencode(figure.name)) <= 255
            Image.new("RGB", (2, 2)).save(figure)  # the file system takes it
        assert f"its attention figures are {stem}_attention.png and .gif" in caplog.text


def test_a_dangling_link_is_an_image_whose_row_names_its_missing_target(tmp_path):
    """A broken link is neither left out of a folder unsaid nor called a pattern: it is
    found, and reading it says which target is missing."""
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    link = tmp_path / "dangling.jpg"
    link.symlink_to("nonexist.jpg")
    assert find_images(str(tmp_path)) == [link, tmp_path / "ok.png"]
    assert find_images(str(link)) == [link]
    with pytest.raises(BadSampleError, match=r"dangling\.jpg: file not found \(a symbolic link to nonexist\.jpg, "
                                             r"which does not exist\); "):
        load_rgb(link)


def test_what_a_folder_or_pattern_names_but_leaves_out_is_said_and_a_double_star_reaches_every_level(tmp_path):
    from capgen.commands.caption import left_out

    for name in ("a.jpg", "nested/b.jpg", "nested/deeper/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    Image.new("RGB", (4, 4)).save(tmp_path / "noext", format="JPEG")  # an image, but no extension says so
    (tmp_path / "notes.txt").write_text("hello")
    found = find_images(str(tmp_path))
    assert found == [tmp_path / "a.jpg"]
    assert left_out(str(tmp_path), found) == (
        f"left out of images={tmp_path}: 1 sub-folder (nested/; their images too: images='{tmp_path}/**/*'); 2 files "
        "without an image extension (noext, notes.txt; accepted: .jpg, .jpeg, .png, .bmp, .gif, .webp, .tif, .tiff)")
    # `**` goes down every level, as it does in a shell with globstar.
    deep = find_images(f"{tmp_path}/**/*")
    assert deep == sorted([tmp_path / "a.jpg", tmp_path / "nested" / "b.jpg", tmp_path / "nested" / "deeper" / "c.png"])
    assert left_out(f"{tmp_path}/**/*", deep).startswith(f"left out of images={tmp_path}/**/*: 2 files without an image extension (noext, notes.txt;")
    assert left_out(str(tmp_path / "a.jpg"), [tmp_path / "a.jpg"]) is None
    assert left_out(f"{tmp_path}/*.jpg", [tmp_path / "a.jpg"]) is None
