import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from capgen.viz import attention_figure, attention_frames, upsample_attention, write_gif


def test_upsampled_map_peaks_where_the_weight_is_and_keeps_relative_strength():
    grid = 4
    alphas = torch.full((2, grid * grid), 1 / 16)
    alphas[0] = 0.0
    alphas[0, 1 * grid + 2] = 1.0  # all weight on row 1, column 2
    maps = upsample_attention(alphas, grid, (40, 40))
    assert maps.shape == (2, 40, 40) and maps.max() == 1.0
    y, x = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert 10 <= y < 20 and 20 <= x < 30  # inside that cell's pixels
    assert maps[1].max() < 0.2  # the uniform step stays dim next to the sharp one


def test_attention_figure_has_a_panel_per_word_with_the_word_as_title():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    words = ["a", "red", "circle", "<end>"]
    fig = attention_figure(image, words, torch.softmax(torch.randn(4, 16), -1), grid=4, cols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["input", *words]
    assert len(fig.axes) == 6  # 2 rows x 3 columns


# (H, W) of the pictures the figures get: a 3000x300 panorama and its tall twin drawn 200 px
# long (the PNG's panels) or 320 px (the GIF), a 10000x10 strip (1 px short side), a 1x1 dot.
EXTREME_SIZES = [(20, 200), (200, 20), (32, 320), (320, 32), (1, 320), (320, 1), (1, 1), (2, 3)]


@pytest.mark.parametrize("grid", [1, 8, 14])
@pytest.mark.parametrize("size", EXTREME_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_attention_png_and_gif_are_drawn_at_any_aspect_ratio(tmp_path, size, grid):
    image = np.full((*size, 3), 120, dtype=np.uint8)
    words = ["a", "long", "view"]
    alphas = torch.softmax(torch.randn(4, grid * grid), -1)
    maps = upsample_attention(alphas[:3], grid, size)
    assert maps.shape == (3, *size) and np.isfinite(maps).all() and maps.max() == pytest.approx(1.0)
    fig = attention_figure(image, words, alphas, grid)
    fig.savefig(tmp_path / "x.png", dpi=20)
    plt.close(fig)
    assert Image.open(tmp_path / "x.png").format == "PNG"
    gif = Image.open(write_gif(tmp_path / "x.gif", attention_frames(image, words, alphas, grid, [0.5, 0.4, 0.3])))
    assert gif.n_frames == 4 and gif.size[1] == size[0] + max(24, size[0] // 10)  # under the word's band
    assert gif.size[0] >= max(size[1], 60)  # a narrow picture is framed wide enough for "long  0.40 ... 2/3"


def test_a_panoramas_map_is_blurred_by_its_own_cell_on_each_axis():
    # 4x4 cells of 5 px high and 50 px wide: the blur is about a cell on each axis, so the
    # spot stays in its cell's rows instead of being smeared over the whole 20 px height.
    grid = 4
    alphas = torch.zeros(1, grid * grid)
    alphas[0, 0 * grid + 2] = 1.0  # row 0, column 2
    m = upsample_attention(alphas, grid, (20, 200))[0]
    y, x = np.unravel_index(m.argmax(), m.shape)
    assert 0 <= y < 5 and 100 <= x < 150
    assert m[15:].max() < 0.05  # the bottom row of cells stays dark


def test_attention_gif_has_one_frame_per_word_even_when_frames_would_repeat(tmp_path):
    image = np.full((60, 120, 3), 90, dtype=np.uint8)
    words = ["a", "a", "a"]  # the same word with the same map and probability three times
    alphas = torch.full((4, 16), 1 / 16)  # one more row (<end>'s) than words, as decoding gives
    path = write_gif(tmp_path / "x.gif", attention_frames(image, words, alphas, grid=4, probs=[0.5, 0.5, 0.5]))
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (120, 60 + 24)  # the picture under a band for the word
    assert gif.info["loop"] == 0
