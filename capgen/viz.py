"""Attention figures: the image with each word's attention map over it (Xu et al. fig. 3)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files or TensorBoard
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.transforms.functional import gaussian_blur  # noqa: E402


def upsample_attention(alphas: torch.Tensor, grid: int, size: tuple[int, int]) -> np.ndarray:
    """alphas (L, P) on a grid x grid lattice -> (L, H, W) smooth maps scaled to [0, 1].

    Bilinear upsampling, then a Gaussian blur about one cell wide, so the map reads as a
    soft spotlight rather than a chequerboard. All maps share one scale (the caption's
    strongest weight is 1), so a diffuse step looks diffuse instead of being stretched to
    the same contrast as a sharp one.
    """
    maps = alphas.detach().float().cpu().reshape(-1, 1, grid, grid)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    cell = max(size) / grid
    k = int(2 * round(cell) + 1)
    maps = gaussian_blur(maps, kernel_size=[k, k], sigma=[cell / 2, cell / 2]).squeeze(1)
    return (maps / maps.max().clamp_min(1e-12)).numpy()


def attention_figure(image: np.ndarray, words: list[str], alphas: torch.Tensor, grid: int, cols: int = 5):
    """image (H, W, 3) uint8, words (L), alphas (L, P) -> a Figure with one panel per word,
    the map drawn over the greyed image and the word above it; the first panel is the image."""
    maps = upsample_attention(alphas[: len(words)], grid, image.shape[:2])
    n = len(words) + 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=9)
    for k, (word, m) in enumerate(zip(words, maps), start=1):
        ax = axes.flat[k]
        ax.imshow(image)
        ax.imshow(m, cmap="gray", alpha=0.75, vmin=0, vmax=1)  # bright where the model looks
        ax.set_title(word, fontsize=10)
    fig.tight_layout()
    return fig
