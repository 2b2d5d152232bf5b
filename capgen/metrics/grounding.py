"""Grounding score: does the attention look at the object a generated word names?

On the built-in shapes data every object's box is known (`ShapesSource.scene(i)`), so an
attention model can be checked word by word, not only by its captions' scores.

The rule, exactly:
  * Counted words. A word counts when it is a shape word and the word just before it a colour
    word such that the scene holds an object of that colour and shape. Colour-and-shape
    pairs are distinct within a scene, so that object is unique.
    A named object the scene does not hold ("blue circle" where there is none), and a shape
    word without a colour ("the circle"), do not count: there is no box to look at.
  * Hit. The attention of the step that emitted the word (its row of alphas, P = grid x
    grid weights) peaks on the cell with the largest weight. The image of `image_size`
    pixels is cut into grid x grid square cells of side s = image_size / grid. The step
    hits when the peak cell's centre lies inside the object's box grown by half a cell on
    every side, strictly: x0 - s/2 < cx < x1 + s/2, and the same for y (box pixels
    [x0, x1) x [y0, y1)). Equivalently: the peak cell and the box overlap with positive
    area. The slack is there because the encoder pools its feature map into the cells, so
    a cell that holds part of the object sees it even when its centre is off the object.
  * Ties. When several cells share the largest weight, the step scores the share of them
    that hit (the expected hit of picking one of them at random). Uniform attention so
    scores exactly the chance level.
  * Chance. For each counted word, the share of all P cells that would hit; `chance` is its
    mean over the counted words: the expected score of a peak drawn uniformly at random.
  * Other object, the control for a word-agnostic gaze. The same peak scored against each
    other object of the scene instead of the named one (mean over those objects); `other`
    is its mean over the counted words of scenes with two or more objects. A model that
    looks at whatever object stands out, whichever word it emits, scores `other` as high as
    `score`: an untrained attention does (it peaks on salient colours, so far from chance,
    both ways); only a model that looks at the object it names scores above `other`.
`score` is the mean hit over counted words. With no counted word all three are NaN (other
also with no scene of two or more objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .per_image import PerImageMetric


class GroundingScore(NamedTuple):
    score: float  # share of counted words whose attention peak hit the named object
    chance: float  # the same for a peak drawn uniformly over the grid, averaged over the words
    other: float  # the same peaks scored against the scene's other objects (the control)
    n_words: int  # counted words


def hit_cells(box: Sequence[int], grid: int, image_size: int) -> np.ndarray:
    """bool (grid, grid), [row, column]: the cells whose centre lies in the box grown by half a cell."""
    x0, y0, x1, y1 = box
    s = image_size / grid
    centres = (np.arange(grid) + 0.5) * s  # (grid,) pixel coordinate of each cell's centre
    cols = (centres > x0 - s / 2) & (centres < x1 + s / 2)
    rows = (centres > y0 - s / 2) & (centres < y1 + s / 2)
    return rows[:, None] & cols[None, :]


def named_objects(words: Sequence[str], scene) -> list[tuple[int, object]]:
    """(position, object) for every counted word: a shape word right after a colour word that
    together name an object of `scene` (anything with `.objects` of shape/colour/box). The
    scene's objects say which words are colours and shapes: the metric knows no data set's."""
    by_name = {(o.colour, o.shape): o for o in scene.objects}
    out = []
    for k in range(1, len(words)):
        obj = by_name.get((words[k - 1], words[k]))
        if obj is not None:
            out.append((k, obj))
    return out


def caption_counts(alphas: torch.Tensor | np.ndarray, words: Sequence[str], scene, grid: int, image_size: int) -> np.ndarray:
    """One caption's sums: [hits, chances, counted words, other-object hits, words with another
    object] (float64 (5,)); grounding_score divides their totals. alphas (L, P) as below."""
    counts = np.zeros(5)
    counted = named_objects(words, scene)
    if not counted:
        return counts
    a = alphas.detach().float().cpu().numpy() if isinstance(alphas, torch.Tensor) else np.asarray(alphas, float)
    if a.ndim != 2 or a.shape[1] != grid * grid:
        raise ValueError(f"grounding_score: attention of shape {a.shape}, expected (L, {grid * grid}) for a {grid}x{grid} grid")
    if a.shape[0] < len(words):
        raise ValueError(f"grounding_score: {a.shape[0]} attention rows for a caption of {len(words)} words")
    for k, obj in counted:
        on_object = hit_cells(obj.box, grid, image_size).reshape(-1)  # (P,)
        peaks = a[k] == a[k].max()  # (P,) usually a single cell
        counts[:3] += on_object[peaks].mean(), on_object.mean(), 1
        rest = [o for o in scene.objects if o is not obj]
        if rest:
            counts[3:] += np.mean([hit_cells(o.box, grid, image_size).reshape(-1)[peaks].mean() for o in rest]), 1
    return counts


def score_from_counts(totals: np.ndarray) -> GroundingScore:
    """GroundingScore from summed caption_counts (NaN where nothing was counted)."""
    hits, chances, n, others, n_others = totals
    nan = float("nan")
    return GroundingScore(
        float(hits / n) if n else nan, float(chances / n) if n else nan, float(others / n_others) if n_others else nan, int(n)
    )


def grounding_score(
    alphas_per_caption: Sequence[torch.Tensor | np.ndarray],
    words_per_caption: Sequence[Sequence[str]],
    scenes: Sequence,
    grid: int,
    image_size: int,
) -> GroundingScore:
    """Score attention against the scenes' boxes (see the module docstring for the rule).

    alphas_per_caption[i]: (L_i, P) attention of caption i, row k the step that emitted
    words_per_caption[i][k]; P = grid * grid, cells in row-major order (as the encoder's
    (h, w) grid is flattened). scenes[i]: the scene caption i describes. image_size: the
    side in pixels of the frame the boxes are given in (the source's image_size).
    """
    if not (len(alphas_per_caption) == len(words_per_caption) == len(scenes)):
        raise ValueError(
            f"grounding_score: {len(alphas_per_caption)} attention maps, {len(words_per_caption)} "
            f"captions and {len(scenes)} scenes; give one of each per caption"
        )
    totals = np.zeros(5)
    for alphas, words, scene in zip(alphas_per_caption, words_per_caption, scenes):
        totals += caption_counts(alphas, words, scene, grid, image_size)
    return score_from_counts(totals)


class GroundingScores(PerImageMetric):
    """The grounding score of a test epoch, safe under DDP (each image counts once, see
    capgen.metrics.per_image): add_captions(...) or update(image_ids (B,), counts (B, 5)
    from caption_counts) per batch; compute() -> GroundingScore."""

    FIELDS = ("counts",)

    def update(self, image_ids: torch.Tensor, counts: torch.Tensor) -> None:
        self.add_rows(image_ids, counts=counts.double())

    def add_captions(self, image_ids: torch.Tensor, tokens: torch.Tensor, alphas: torch.Tensor, scenes,
                     itos: Sequence[str], end_id: int, grid: int) -> None:
        """Score a batch of decoded captions: tokens (B, L), alphas (B, L, P) as decoded; `scenes`
        the split's (capgen.data.datamodule.Scenes: scene_of(image_id), image_size)."""
        counts = []
        for k, image_id in enumerate(image_ids.tolist()):
            words = caption_words(tokens[k].tolist(), itos, end_id)
            counts.append(caption_counts(alphas[k, : len(words)], words, scenes.scene_of(image_id), grid, scenes.image_size))
        self.update(image_ids, torch.from_numpy(np.stack(counts)).to(image_ids.device))

    def compute(self) -> GroundingScore:
        _, rows = self.per_image()
        return score_from_counts(rows["counts"].sum(0).numpy())


def caption_words(tokens: Sequence[int], itos: Sequence[str], end_id: int) -> list[str]:
    """The emitted tokens before the first <end> as words, one per decoding step, so that
    word k stays aligned with attention row k (<unk> included, unlike a decoded caption)."""
    words = []
    for t in tokens:
        t = int(t)
        if t == end_id:
            break
        words.append(itos[t])
    return words
