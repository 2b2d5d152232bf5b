"""Attention figures: the image with each word's attention map over it (Xu et al. fig. 3).

Two forms: a grid of panels, one per word (`attention_figure`, a matplotlib Figure for
TensorBoard or a PNG), and an animated GIF, one frame per word (`attention_frames`, written
by `write_gif`); `draw_attention` writes both for one caption (capgen-caption, capgen-demo).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files or TensorBoard
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.transforms.functional import gaussian_blur  # noqa: E402


def upsample_attention(alphas: torch.Tensor, grid: int, size: tuple[int, int]) -> np.ndarray:
    """alphas (L, P) on a grid x grid lattice -> (L, H, W) smooth maps scaled to [0, 1].

    Bilinear upsampling, then a Gaussian blur about one cell across, so the map reads as a
    soft spotlight rather than a chequerboard. All maps share one scale (the caption's
    strongest weight is 1), so a diffuse step looks diffuse instead of being stretched to
    the same contrast as a sharp one.
    """
    maps = alphas.detach().float().cpu().reshape(-1, 1, grid, grid)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    # A cell is H/grid pixels high and W/grid wide, so each axis gets its own blur: one
    # length for both would smear a panorama's short side with the long side's cell. The
    # kernel's radius stays under the side, as the blur's reflect padding requires (a 1 px
    # side gets no blur, a grid of 1 cell a blur as wide as the picture).
    radius = [min(round(side / grid), side - 1) for side in size]  # (y, x)
    maps = gaussian_blur(
        maps,
        kernel_size=[2 * radius[1] + 1, 2 * radius[0] + 1],  # torchvision's order: (x, y)
        sigma=[size[1] / grid / 2, size[0] / grid / 2],
    ).squeeze(1)
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


def caption_figure(image: np.ndarray, title: str, caption: str, width: int = 36):
    """image (H, W, 3) uint8 -> a Figure of the image under its title and (wrapped) caption."""
    fig, ax = plt.subplots(figsize=(3.2, 3.6))
    ax.imshow(image)
    ax.axis("off")
    ax.set_title(f"{title}\n{textwrap.fill(caption, width)}", fontsize=9)
    fig.tight_layout()
    return fig


def _overlay(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8, map (H, W) in [0, 1] -> the panel attention_figure draws: the
    map in grey at 75% opacity over the image, bright where the model looks."""
    out = 0.25 * image.astype(np.float32) + 0.75 * 255.0 * m[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _smooth_maps(alphas: torch.Tensor, grid: int, size: tuple[int, int], work: int = 128) -> np.ndarray:
    """upsample_attention's maps for a large frame at a fraction of the cost: its blur (a
    kernel about a cell wide) is made at `work` pixels on the longer side, then the smooth
    maps are resized bilinearly, which changes them very little. (L, P) -> (L, H, W) in [0, 1]."""
    h, w = size
    if max(h, w) <= work:
        return upsample_attention(alphas, grid, size)
    small = (max(1, round(h * work / max(h, w))), max(1, round(w * work / max(h, w))))
    maps = torch.from_numpy(upsample_attention(alphas, grid, small)).unsqueeze(1)  # (L, 1, h', w')
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False).squeeze(1)
    return (maps / maps.max().clamp_min(1e-12)).numpy()


def _font(size: int):
    try:  # Pillow's bundled scalable font (needs FreeType)
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # an old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def _frame(picture: np.ndarray, left: str, right: str, font, band: int, width: int) -> Image.Image:
    """picture (H, W, 3), centred in a white frame `width` >= W wide, under a white band of
    `band` pixels holding `left` and `right`."""
    h, w = picture.shape[:2]
    frame = Image.new("RGB", (width, h + band), "white")
    frame.paste(Image.fromarray(picture), ((width - w) // 2, band))
    draw = ImageDraw.Draw(frame)
    draw.text((6, band // 2), left, fill="black", font=font, anchor="lm")
    draw.text((width - 6, band // 2), right, fill=(110, 110, 110), font=font, anchor="rm")
    return frame


def attention_frames(
    image: np.ndarray, words: list[str], alphas: torch.Tensor, grid: int, probs: list[float] | None = None
) -> list[Image.Image]:
    """The GIF's frames: the plain image ("input"), then per word the image with that word's
    map over it, the word and its probability above. image (H, W, 3) uint8, words (L),
    alphas (L', P) with L' >= L (row k: the step that emitted word k), probs (L) or None.

    Maps are drawn as attention_figure draws them, on one scale per caption (smoothed at a
    lower resolution first for large images: the blur's cost grows with the 4th power of the side). Each frame's
    band also says which word of how many it is, so no two frames are alike: GIF writers
    merge identical consecutive frames, and the count is one frame per word plus one.
    """
    maps = _smooth_maps(alphas[: len(words)], grid, image.shape[:2])  # (L, H, W)
    band = max(24, image.shape[0] // 10)
    font = _font(band * 2 // 3)
    n = len(words)
    labels = [("input", f"0/{n}")] + [
        (word if probs is None else f"{word}  {probs[k]:.2f}", f"{k + 1}/{n}") for k, word in enumerate(words)
    ]
    # A narrow picture (a tall strip) is framed wider, so every label shows in full: frames
    # whose labels fell outside would look alike, and be merged, wherever the maps do.
    width = max(image.shape[1], *(math.ceil(font.getlength(left) + font.getlength(right)) + 24 for left, right in labels))
    pictures = [image] + [_overlay(image, m) for m in maps]
    return [_frame(p, left, right, font, band, width) for p, (left, right) in zip(pictures, labels)]


def write_gif(path: str | Path, frames: list[Image.Image], frame_ms: int = 800) -> Path:
    """Write `frames` as a looping animated GIF to `path`, the last frame (the whole caption
    seen) held twice as long. Returns the path."""
    durations = [frame_ms] * len(frames)
    durations[-1] = 2 * frame_ms
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def resize_longest(picture: np.ndarray, longest: int) -> np.ndarray:
    """picture (H, W, 3) uint8 resized, aspect kept, so that its longer side is `longest`."""
    image = Image.fromarray(picture)
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def draw_attention(png: Path, gif: Path, picture: np.ndarray, words: list[str], alphas: torch.Tensor, grid: int,
                   probs: list[float], frame_ms: int) -> list[Image.Image]:
    """One caption's attention figures, as capgen-caption and capgen-demo draw them: the PNG
    (a panel per word) and the GIF (a frame per word) of `picture` (H, W, 3) uint8, with
    words (L), alphas (L, P) and probs (L). Returns the GIF's frames (the input, then one per
    word). On an error neither file is left behind."""
    try:
        # The grid's panels are 200 px wide: a larger picture would only slow the blur.
        fig = attention_figure(resize_longest(picture, 200), words, alphas, grid)
        try:
            fig.savefig(png, dpi=100)
        finally:
            plt.close(fig)
        frames = attention_frames(picture, words, alphas, grid, probs)
        write_gif(gif, frames, frame_ms)
    except Exception:
        png.unlink(missing_ok=True)
        gif.unlink(missing_ok=True)
        raise
    return frames
