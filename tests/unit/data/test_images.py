import colorsys
import logging
import pickle

import numpy as np
import PIL
import pytest
from PIL import Image, ImageFile, ImageOps

from capgen.data.images import BadSampleError, BadSamples, load_rgb, to_rgb8

from helpers.fixtures_real import BLUE, CMYK_RGB, EXIF_UPRIGHT_SIZE, RED, make_odd_images, write_png16

PILLOW_MAJOR = int(PIL.__version__.split(".")[0])

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


# Every PIL mode, against a conversion computed here with numpy in float64 (the rules are
# to_rgb8's docstring). H x W pictures of random samples, with the ends of each range planted.
H, W = 6, 8
FILE_CASES = (
    "png 16-bit grey", "tiff 16-bit grey", "tiff 16-bit grey big-endian", "pgm 16-bit", "png 16-bit rgb",
    "png 16-bit grey+alpha", "png 16-bit rgba", "tiff int32", "tiff int32 within 0..65535", "tiff float 0..1",
    "tiff float 3..997", "tiff float 0..1 with nan and inf", "tiff float 3..997 with nan and inf", "tiff float flat 500",
    "png bilevel", "png palette with a transparent entry", "png grey+alpha", "tiff cmyk", "jpeg cmyk", "tiff ycbcr",
    "tiff lab",
)
MEMORY_CASES = ("HSV", "PA", "La", "RGBX", "I;16L", "I;16N")


def _u8(x):
    """float64 to uint8, clipped to 0..255 and rounded to nearest."""
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


def _grey(values):
    return np.repeat(np.asarray(values)[:, :, None], 3, axis=2)


def _stretch(values):
    """The finite values' own min..max onto 0..255; NaN and -inf 0, +inf 255."""
    finite = values[np.isfinite(values)]
    out = (np.nan_to_num(values, nan=finite.min(), neginf=finite.min(), posinf=finite.min()) - finite.min())
    out = out * 255.0 / (finite.max() - finite.min())
    out[np.isposinf(values)] = 255
    return out


def _image(mode, samples):
    return Image.frombytes(mode, (W, H), np.ascontiguousarray(samples).tobytes())


def _cmyk_to_rgb(cmyk):
    cmyk = cmyk.astype(np.float64)
    return _u8((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255)


def _ycbcr_to_rgb(ycc):
    """JPEG's (JFIF) full-range YCbCr."""
    y, cb, cr = (ycc[..., k].astype(np.float64) for k in range(3))
    return _u8(np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                         y + 1.772 * (cb - 128)], axis=-1))


def _lab_to_srgb(lab):
    """PIL's 8-bit LAB (L* scaled by 255/100; a*, b* signed bytes) as sRGB: CIELAB on a D50
    white, adapted to sRGB's D65 white by the Bradford matrix, as ICC colour management does."""
    lightness = lab[..., 0].astype(np.float64) * 100 / 255
    a, b = lab[..., 1].view(np.int8).astype(np.float64), lab[..., 2].view(np.int8).astype(np.float64)
    fy = (lightness + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * (0.96422, 1.0, 0.82521)
    bradford_d50_to_d65 = np.array([[0.9555766, -0.0230393, 0.0631636], [-0.0282895, 1.0099416, 0.0210077],
                                    [0.0122982, -0.0204830, 1.3299098]])
    xyz_to_linear_srgb = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                                   [0.0556434, -0.2040259, 1.0572252]])
    linear = np.clip(xyz @ bradford_d50_to_d65.T @ xyz_to_linear_srgb.T, 0, 1)
    return _u8(255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055))


def _write_file_cases(folder):
    """{case: (path, the mode PIL opens it in, reference (H, W, 3) uint8, tolerance)}."""
    rng = np.random.default_rng(7)
    cases = {}

    def add(case, name, mode, reference, tolerance=0):
        cases[case] = (folder / name, mode, reference, tolerance)

    u16 = rng.integers(0, 65536, (H, W))
    u16[0, :4] = (0, 65535, 128, 129)  # the ends, and either side of a rounding edge (128/257 < 0.5 < 129/257)
    by_257 = _grey(_u8(u16 / 257))
    for name in ("grey16.png", "grey16.tif", "grey16.pgm"):  # PGM with maxval 65535
        Image.fromarray(u16.astype(np.uint16)).save(folder / name)
    add("png 16-bit grey", "grey16.png", "I;16", by_257)
    add("tiff 16-bit grey", "grey16.tif", "I;16", by_257)
    add("pgm 16-bit", "grey16.pgm", "I", by_257)
    _image("I;16B", u16.astype(">u2")).save(folder / "grey16_be.tif")
    add("tiff 16-bit grey big-endian", "grey16_be.tif", "I;16B", by_257)

    # PIL's PNG decoder keeps the high byte of 16-bit colour samples.
    rgb16, grey_alpha16, rgba16 = (rng.integers(0, 65536, (H, W, c)) for c in (3, 2, 4))
    write_png16(folder / "rgb16.png", rgb16)
    add("png 16-bit rgb", "rgb16.png", "RGB", (rgb16 // 256).astype(np.uint8))
    write_png16(folder / "grey_alpha16.png", grey_alpha16)
    add("png 16-bit grey+alpha", "grey_alpha16.png", "RGBA", _grey(grey_alpha16[..., 0] // 256).astype(np.uint8))
    write_png16(folder / "rgba16.png", rgba16)
    add("png 16-bit rgba", "rgba16.png", "RGBA", (rgba16[..., :3] // 256).astype(np.uint8))

    wide_int = rng.integers(-5000, 70_000_000, (H, W)).astype(np.int32)
    Image.fromarray(wide_int).save(folder / "int32.tif")
    add("tiff int32", "int32.tif", "I", _grey(_u8(_stretch(wide_int.astype(np.float64)))))
    Image.fromarray(u16.astype(np.int32)).save(folder / "int32_16bit.tif")
    add("tiff int32 within 0..65535", "int32_16bit.tif", "I", by_257)

    unit = rng.random((H, W)).astype(np.float32)
    unit[0, :2] = (0, 1)
    large = rng.uniform(3, 997, (H, W)).astype(np.float32)
    Image.fromarray(unit).save(folder / "float01.tif")
    add("tiff float 0..1", "float01.tif", "F", _grey(_u8(unit.astype(np.float64) * 255)))
    Image.fromarray(large).save(folder / "float1000.tif")
    add("tiff float 3..997", "float1000.tif", "F", _grey(_u8(_stretch(large.astype(np.float64)))))
    for values, name in ((unit, "float01_nonfinite.tif"), (large, "float1000_nonfinite.tif")):
        values = values.copy()
        values[1, :3] = (np.nan, np.inf, -np.inf)
        Image.fromarray(values).save(folder / name)
    bad_unit = unit.astype(np.float64) * 255
    bad_unit[1, :3] = (0, 255, 0)
    add("tiff float 0..1 with nan and inf", "float01_nonfinite.tif", "F", _grey(_u8(bad_unit)))
    bad_large = large.astype(np.float64)
    bad_large[1, :3] = (np.nan, np.inf, -np.inf)
    add("tiff float 3..997 with nan and inf", "float1000_nonfinite.tif", "F", _grey(_u8(_stretch(bad_large))))
    Image.fromarray(np.full((H, W), 500, np.float32)).save(folder / "float_flat.tif")
    add("tiff float flat 500", "float_flat.tif", "F", np.zeros((H, W, 3), np.uint8))

    bits = rng.random((H, W)) < 0.5
    Image.fromarray(bits).save(folder / "bilevel.png")
    add("png bilevel", "bilevel.png", "1", _grey(np.where(bits, 255, 0).astype(np.uint8)))
    index = rng.integers(0, 4, (H, W)).astype(np.uint8)
    palette = np.array([[0, 0, 0], [250, 10, 20], [10, 200, 90], [30, 40, 250]], np.uint8)
    paletted = _image("P", index)
    paletted.putpalette(palette.ravel().tolist())
    paletted.save(folder / "palette.png", transparency=2)
    add("png palette with a transparent entry", "palette.png", "P", palette[index])  # alpha dropped
    grey_alpha = rng.integers(0, 256, (H, W, 2)).astype(np.uint8)
    _image("LA", grey_alpha).save(folder / "grey_alpha.png")
    add("png grey+alpha", "grey_alpha.png", "LA", _grey(grey_alpha[..., 0]))

    cmyk = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
    _image("CMYK", cmyk).save(folder / "cmyk.tif")
    add("tiff cmyk", "cmyk.tif", "CMYK", _cmyk_to_rgb(cmyk))
    _image("CMYK", cmyk).save(folder / "cmyk.jpg", quality=95)
    with Image.open(folder / "cmyk.jpg") as jpeg:  # lossy: the reference starts from the decoded samples
        add("jpeg cmyk", "cmyk.jpg", "CMYK", _cmyk_to_rgb(np.asarray(jpeg)))
    ycc = rng.integers(16, 241, (H, W, 3)).astype(np.uint8)
    # Pillow 13 opens an uncompressed YCbCr TIFF as YCbCr. Pillow 12 (which gradio, in the test extra,
    # holds to) cannot read that file back ("image file is truncated"), so there the case is an LZW one,
    # which libtiff hands over converted to RGB: the pixels must come out the same either way.
    old_pillow = PILLOW_MAJOR < 13
    _image("YCbCr", ycc).save(folder / "ycbcr.tif", **({"compression": "tiff_lzw"} if old_pillow else {}))
    add("tiff ycbcr", "ycbcr.tif", "RGB" if old_pillow else "YCbCr", _ycbcr_to_rgb(ycc), tolerance=1)
    # Colours inside sRGB's gamut, away from its edges (where PIL's table-driven conversion is coarser).
    lab = np.stack([rng.integers(80, 200, (H, W)), rng.integers(-10, 11, (H, W)) % 256,
                    rng.integers(-10, 11, (H, W)) % 256], axis=-1).astype(np.uint8)
    _image("LAB", lab).save(folder / "lab.tif")
    add("tiff lab", "lab.tif", "LAB", _lab_to_srgb(lab), tolerance=2)
    assert set(cases) == set(FILE_CASES)
    return cases


@pytest.fixture(scope="module")
def file_cases(tmp_path_factory):
    return _write_file_cases(tmp_path_factory.mktemp("modes"))


@pytest.mark.parametrize("case", FILE_CASES)
def test_every_file_mode_loads_as_the_documented_8_bit_rgb(file_cases, case):
    path, mode, reference, tolerance = file_cases[case]
    with Image.open(path) as img:
        assert img.mode == mode  # the mode PIL gives this kind of file, which to_rgb8's rules are by
    image = load_rgb(path, None)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert np.abs(image.astype(int) - reference).max() <= tolerance


def test_wide_images_are_scaled_to_8_bits_then_resized_as_usual(file_cases):
    path, _, reference, _ = file_cases["png 16-bit grey"]
    expected = np.asarray(Image.fromarray(reference).resize((5, 5), Image.Resampling.BILINEAR))
    assert np.array_equal(load_rgb(path, 5), expected)


def _in_memory_case(mode):
    """(an image in a mode no file type opens in, reference (H, W, 3) uint8, tolerance)."""
    rng = np.random.default_rng(11)
    if mode == "HSV":
        hsv = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        rgb = [[colorsys.hsv_to_rgb(*(hsv[i, j] / 255)) for j in range(W)] for i in range(H)]
        return _image("HSV", hsv), _u8(np.array(rgb) * 255), 1
    if mode == "PA":
        samples = rng.integers(0, 256, (H, W, 2)).astype(np.uint8)
        image = _image("PA", samples)
        palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
        image.putpalette(palette.ravel().tolist())
        return image, palette[samples[..., 0]], 0  # alpha dropped
    if mode == "La":  # premultiplied: grey <= alpha; un-premultiplied, then alpha dropped
        alpha = rng.integers(1, 256, (H, W))
        grey = (rng.random((H, W)) * alpha).astype(int)
        return _image("La", np.stack([grey, alpha], -1).astype(np.uint8)), _grey(_u8(grey * 255 / alpha)), 1
    if mode == "RGBX":
        samples = rng.integers(0, 256, (H, W, 4)).astype(np.uint8)
        return _image("RGBX", samples), samples[..., :3], 0
    u16 = rng.integers(0, 65536, (H, W))
    return _image(mode, u16.astype("<u2" if mode == "I;16L" else "=u2")), _grey(_u8(u16 / 257)), 0


@pytest.mark.parametrize("mode", MEMORY_CASES)
def test_modes_no_file_opens_in_convert_by_the_same_rules(mode):
    image, reference, tolerance = _in_memory_case(mode)
    assert image.mode == mode
    out = to_rgb8(image)
    assert out.mode == "RGB" and np.abs(np.asarray(out).astype(int) - reference).max() <= tolerance


@pytest.mark.parametrize("kind", READABLE)
def test_8_bit_files_load_exactly_as_pil_converts_them(odd, kind):
    """Ordinary files keep PIL's own conversion bit for bit."""
    with Image.open(odd[kind]) as img:
        img.load()
        expected = ImageOps.exif_transpose(img).convert("RGB").resize((24, 24), Image.Resampling.BILINEAR)
    assert np.array_equal(load_rgb(odd[kind], 24), np.asarray(expected))


def test_a_problem_of_another_split_stops_under_error_and_is_not_counted_under_skip(caplog):
    with pytest.raises(BadSampleError, match="f.json: repeated id; fix it"):
        BadSamples("error", "x test").elsewhere("f.json", "repeated id", "fix it")
    bad = BadSamples("skip", "x test")
    bad.elsewhere("f.json", "repeated id")
    with caplog.at_level(logging.DEBUG):
        bad.summary(kept=4, total=4)
    assert not caplog.records
