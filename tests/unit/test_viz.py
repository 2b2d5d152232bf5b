import numpy as np
import torch

from capgen.viz import attention_figure, upsample_attention


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
