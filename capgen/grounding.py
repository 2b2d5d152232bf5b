"""Grounding score: does the attention look at the object a generated word names?

On the built-in shapes data every object's box is known (`ShapesSource.scene(i)`), so an
attention model can be checked word by word, not only by its captions' scores.

The rule, exactly:
  * Counted words. A word counts when it is a shape word (SHAPES) and the word just before
    it is a colour word (COLOURS) such that the scene holds an object of that colour and
    shape. Colour-and-shape pairs are distinct within a scene, so that object is unique.
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
`score` is the mean hit over counted words. With no counted word both are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .data.shapes import COLOURS, SHAPES


class GroundingScore(NamedTuple):
    score: float  # share of counted words whose attention peak hit the named object
    chance: float  # the same for a peak drawn uniformly over the grid, averaged over the words
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
    together name an object of `scene` (anything with `.objects` of shape/colour/box)."""
    by_name = {(o.colour, o.shape): o for o in scene.objects}
    out = []
    for k in range(1, len(words)):
        if words[k] in SHAPES and words[k - 1] in COLOURS:
            obj = by_name.get((words[k - 1], words[k]))
            if obj is not None:
                out.append((k, obj))
    return out


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
    hits, chances = [], []
    for alphas, words, scene in zip(alphas_per_caption, words_per_caption, scenes):
        counted = named_objects(words, scene)
        if not counted:
            continue
        a = alphas.detach().float().cpu().numpy() if isinstance(alphas, torch.Tensor) else np.asarray(alphas, float)
        if a.ndim != 2 or a.shape[1] != grid * grid:
            raise ValueError(f"grounding_score: attention of shape {a.shape}, expected (L, {grid * grid}) for a {grid}x{grid} grid")
        if a.shape[0] < len(words):
            raise ValueError(f"grounding_score: {a.shape[0]} attention rows for a caption of {len(words)} words")
        for k, obj in counted:
            on_object = hit_cells(obj.box, grid, image_size).reshape(-1)  # (P,)
            peaks = a[k] == a[k].max()  # (P,) usually a single cell
            hits.append(on_object[peaks].mean())
            chances.append(on_object.mean())
    if not hits:
        return GroundingScore(float("nan"), float("nan"), 0)
    return GroundingScore(float(np.mean(hits)), float(np.mean(chances)), len(hits))


def caption_words(tokens: Sequence[int], itos: Sequence[str], end_id: int) -> list[str]:
    """The emitted tokens before the first <end> as words, one per decoding step.

    Unlike Vocabulary.decode_words this keeps a stray <pad>/<start> an untrained model may
    emit, so word k stays aligned with attention row k.
    """
    words = []
    for t in tokens:
        t = int(t)
        if t == end_id:
            break
        words.append(itos[t])
    return words
