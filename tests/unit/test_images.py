import logging
import pickle

import numpy as np
import pytest
from PIL import ImageFile

from capgen.data.images import BadSampleError, BadSamples, load_rgb

from helpers.fixtures_real import BLUE, CMYK_RGB, EXIF_UPRIGHT_SIZE, RED, make_odd_images

READABLE = ("gray", "cmyk", "palette", "rgba", "png_named_jpg", "exif_rotated")
UNREADABLE = {"truncated": "truncated", "empty": "empty file", "text": "not an image", "missing": "not found"}


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("kind", READABLE)
def test_every_readable_kind_loads_as_rgb_uint8_at_the_requested_size(odd, kind):
    image = load_rgb(odd[kind], 24)
    assert image.dtype == np.uint8 and image.shape == (24, 24, 3)


def test_colours_survive_conversion(odd):
    assert np.abs(load_rgb(odd["gray"], 8).astype(int) - 128).max() <= 3
    assert np.abs(load_rgb(odd["cmyk"], 8).astype(int) - CMYK_RGB).max() <= 12
    for kind in ("palette", "rgba", "png_named_jpg"):
        # palette colours snap to PIL's web palette, hence the wider tolerance
        assert np.abs(load_rgb(odd[kind], 8).astype(int) - (10, 200, 90)).max() <= 30, kind


def test_exif_rotated_photo_comes_out_upright(odd):
    w, h = EXIF_UPRIGHT_SIZE
    image = load_rgb(odd["exif_rotated"], None)
    assert image.shape == (h, w, 3)  # stored w-by-h sideways, shown h tall
    top, bottom = image[: h // 2 - 3].astype(int), image[h // 2 + 3:].astype(int)
    assert np.abs(top - RED).max() <= 12 and np.abs(bottom - BLUE).max() <= 12
    square = load_rgb(odd["exif_rotated"], 16).astype(int)
    assert np.abs(square[:5] - RED).max() <= 12 and np.abs(square[-5:] - BLUE).max() <= 12


def test_size_none_keeps_the_stored_size_and_resize_squashes(odd):
    assert load_rgb(odd["gray"], None).shape == (30, 40, 3)
    assert load_rgb(odd["gray"], 50).shape == (50, 50, 3)


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_files_raise_bad_sample_naming_file_and_fix(odd, kind):
    with pytest.raises(BadSampleError) as err:
        load_rgb(odd[kind], 24)
    message = str(err.value)
    assert str(odd[kind]) in message and UNREADABLE[kind] in message
    assert "data.on_bad_sample=skip" in message and err.value.path == str(odd[kind])
    assert isinstance(err.value, ValueError)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_sample_error_keeps_its_type_across_processes(odd):
    err = BadSampleError(odd["empty"], "empty file (0 bytes)")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is BadSampleError and str(again) == str(err) and again.path == err.path
    # how a DataLoader re-raises a worker's error: the class called with one message
    assert str(BadSampleError("Caught BadSampleError in worker")) == "Caught BadSampleError in worker"


def test_error_policy_raises_the_first_problem():
    bad = BadSamples("error", "x train")
    with pytest.raises(BadSampleError, match="a.jpg: gone; put it back"):
        bad.report("missing file", "a.jpg", "gone", "put it back")


def test_skip_policy_logs_one_summary_line_with_counts(caplog):
    bad = BadSamples("skip", "x train")
    bad.report("missing file", "a.jpg", "gone")
    bad.report("missing file", "b.jpg", "gone")
    bad.report("empty caption", "ann.json (image id 3)", "caption 0 is empty")
    bad.exclude()
    with caplog.at_level(logging.WARNING, logger="capgen"):
        bad.summary(kept=7, total=10)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    for part in ("skipped 3 of 10 images in x train", "2 missing files", "1 empty caption", "1 excluded image", "first: a.jpg: gone"):
        assert part in line


def test_nothing_skipped_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG):
        BadSamples("skip", "x").summary(kept=4, total=4)
    assert not caplog.records


def test_unknown_policy_names_the_setting():
    with pytest.raises(ValueError, match="data.on_bad_sample"):
        BadSamples("skp", "x")
