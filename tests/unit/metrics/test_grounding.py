"""Grounding score: the rule on constructed attention, and untrained vs trained models."""

import dataclasses
import itertools
import random

import numpy as np
import pytest
import torch

from capgen.data.shapes import Scene, ShapeObject, ShapesSource
from capgen.metrics.grounding import GroundingScores, caption_counts, caption_words, grounding_score, hit_cells, named_objects

GRID, SIZE = 8, 96  # the shapes default: 96 px images, an 8x8 attention grid, 12 px cells


def scene(*objects: ShapeObject) -> Scene:
    return Scene(objects=objects, captions=(), word_objects=())


RED_CIRCLE = ShapeObject("circle", "red", "small", (24, 24, 48, 48))  # exactly cells (2..3, 2..3)
BLUE_SQUARE = ShapeObject("square", "blue", "large", (60, 0, 96, 36))
WORDS = "a small red circle left of a large blue square".split()


def peaked(cells: list[int], length: int = len(WORDS)) -> torch.Tensor:
    """(length, P) attention: step k has all its weight on cells[k] (None: uniform)."""
    a = torch.full((length, GRID * GRID), 1.0 / GRID**2)
    for k, c in enumerate(cells):
        if c is not None:
            a[k] = 0.0
            a[k, c] = 1.0
    return a


def cell(row: int, col: int) -> int:
    return row * GRID + col


def test_hit_cells_is_the_box_grown_by_half_a_cell():
    # Box [24, 48): cell centres 30 and 42 are inside; 18 and 54 lie exactly half a cell out
    # and do not count (the rule is strict: the cell must overlap the box by some area).
    mask = hit_cells(RED_CIRCLE.box, GRID, SIZE)
    assert mask.sum() == 4 and mask[2:4, 2:4].all()
    # A box edge inside a cell takes that cell: [25, 37) touches cells 2 and 3 on each axis.
    assert hit_cells((25, 25, 37, 37), GRID, SIZE)[2:4, 2:4].all()


def test_counted_words_are_colour_shape_pairs_naming_an_object_of_the_scene():
    s = scene(RED_CIRCLE, BLUE_SQUARE)
    assert [(k, o.shape) for k, o in named_objects(WORDS, s)] == [(3, "circle"), (9, "square")]
    assert named_objects("a green circle and the circle".split(), s) == []  # not in the scene; no colour
    assert named_objects("a red square over a blue circle".split(), s) == []  # colours swapped: no such objects


def test_peak_on_the_box_scores_one_far_corner_zero_uniform_chance():
    s = scene(RED_CIRCLE, BLUE_SQUARE)
    # Counted steps: 3 (red circle, cells rows/cols 2..3) and 9 (blue square, top right).
    on = [None] * 3 + [cell(3, 2)] + [None] * 5 + [cell(1, 6)]
    assert grounding_score([peaked(on)], [WORDS], [s], GRID, SIZE) == (1.0, pytest.approx((4 + 9) / 2 / 64), 0.0, 2)
    far = [None] * 3 + [cell(7, 7)] + [None] * 5 + [cell(7, 0)]
    assert grounding_score([peaked(far)], [WORDS], [s], GRID, SIZE)[::2] == (0.0, 0.0)
    # each word looking at the other object: a miss, and a hit for the control
    swapped = [None] * 3 + [cell(1, 6)] + [None] * 5 + [cell(3, 2)]
    assert grounding_score([peaked(swapped)], [WORDS], [s], GRID, SIZE)[::2] == (0.0, 1.0)
    uniform = grounding_score([peaked([])], [WORDS], [s], GRID, SIZE)
    assert uniform.score == pytest.approx(uniform.chance)  # ties share the hit: uniform is chance exactly
    assert uniform.chance == pytest.approx((4 / 64 + 9 / 64) / 2)  # the square: cells aligned, 3 x 3


def test_tied_peaks_score_the_share_on_the_object():
    a = peaked([])
    a[3] = 0.0
    a[3, cell(2, 2)] = a[3, cell(7, 7)] = 0.5  # one tied peak on the circle, one off
    g = grounding_score([a], [WORDS[:4]], [scene(RED_CIRCLE)], GRID, SIZE)
    assert (g.score, g.chance, g.n_words) == (0.5, 4 / 64, 1) and np.isnan(g.other)  # no other object


def test_chance_matches_a_brute_force_count_of_overlapping_cells():
    rng = random.Random(0)
    for grid, size in [(8, 96), (7, 96), (14, 224), (4, 112)]:
        s = size / grid
        for _ in range(50):
            x0, y0 = rng.randrange(size - 8), rng.randrange(size - 8)
            box = (x0, y0, rng.randrange(x0 + 1, size + 1), rng.randrange(y0 + 1, size + 1))
            # Independent form of the rule: the cell's square overlaps the box with positive area.
            brute = sum(
                min((c + 1) * s, box[2]) - max(c * s, box[0]) > 0 and min((r + 1) * s, box[3]) - max(r * s, box[1]) > 0
                for r, c in itertools.product(range(grid), repeat=2)
            )
            obj = ShapeObject("square", "red", "small", box)
            g = grounding_score([torch.full((2, grid * grid), 1.0)], [["red", "square"]], [scene(obj)], grid, size)
            assert g.chance == pytest.approx(brute / grid**2) and hit_cells(box, grid, size).sum() == brute


def test_uniform_attention_on_real_scenes_scores_exactly_chance():
    src = ShapesSource("val", sizes={"val": 40})
    scenes = [src.scene(i) for i in range(40)]
    words = [c.split() for c in (s.captions[0] for s in scenes)]
    g = grounding_score([torch.ones(len(w), GRID * GRID) for w in words], words, scenes, GRID, SIZE)
    assert g.n_words >= 40 and g.score == pytest.approx(g.chance) and 0.05 < g.chance < 0.3


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2 attention maps, 1 captions and 1 scenes"):
        grounding_score([peaked([])] * 2, [WORDS], [scene(RED_CIRCLE)], GRID, SIZE)
    with pytest.raises(ValueError, match=r"expected \(L, 64\)"):
        grounding_score([torch.ones(len(WORDS), 49)], [WORDS], [scene(RED_CIRCLE)], GRID, SIZE)
    assert np.isnan(grounding_score([], [], [], GRID, SIZE).score)


def test_metric_counts_an_image_repeated_across_batches_once():
    """GroundingScores (the test step's, DDP-safe) equals grounding_score on the distinct
    images when the distributed sampler repeats some."""
    s = scene(RED_CIRCLE, BLUE_SQUARE)
    hit = [None] * 3 + [cell(3, 2)] + [None] * 5 + [cell(1, 6)]
    miss = [None] * 3 + [cell(7, 7)] + [None] * 5 + [cell(1, 6)]
    captions = {10: peaked(hit), 11: peaked(miss)}
    metric = GroundingScores()
    for ids in ([10, 11], [11]):  # image 11 twice: once more in a padded last batch
        counts = np.stack([caption_counts(captions[i], WORDS, s, GRID, SIZE) for i in ids])
        metric.update(torch.tensor(ids), torch.from_numpy(counts))
    expected = grounding_score(list(captions.values()), [WORDS] * 2, [s] * 2, GRID, SIZE)
    assert metric.compute() == expected and expected.score == 0.75


def test_caption_words_keep_one_word_per_step_up_to_end():
    itos = ["<pad>", "<start>", "<end>", "<unk>", "red", "circle"]
    assert caption_words([4, 0, 5, 2, 0, 0], itos, end_id=2) == ["red", "<pad>", "circle"]


# ----- models ---------------------------------------------------------------------------------
# Measured on these 200 test scenes (418 counted words in the 135 with two or more objects,
# teacher-forced on reference 0): an untrained attention model's peaks follow what stands out
# in the image, not the word. By initialisation seed (0..5) it scores 0.08, 0.34, 0.35, 0.29,
# 0.20, 0.17 against a uniform-cell chance of 0.14: far from chance either way, since the
# colourful objects are where untrained features are largest (or smallest). What it cannot
# do is pick the *named* object: scored against another object of the same scene instead, it
# gets the same within 0.02 for every seed. That is the test of "untrained" below.
N_SCENES = 200


@pytest.fixture(scope="module")
def test_scenes():
    src = ShapesSource("test", sizes={"test": N_SCENES})
    images = torch.stack([torch.from_numpy(src.image(i)).permute(2, 0, 1) for i in range(N_SCENES)])
    return [src.scene(i) for i in range(N_SCENES)], images


def renamed(s: Scene) -> Scene:
    """The scene with each object given the next one's colour and shape: every counted word
    then points at another object's box (the control for a word-agnostic peak)."""
    objs = s.objects
    names = [(o.colour, o.shape) for o in objs[1:] + objs[:1]]
    return dataclasses.replace(s, objects=tuple(dataclasses.replace(o, colour=c, shape=sh) for o, (c, sh) in zip(objs, names)))


def teacher_forced_attention(net, vocab, scenes, images):
    """Attention at each word of reference caption 0: (L, P) per scene, and the words."""
    ids = [vocab.encode(s.captions[0]) for s in scenes]
    inputs = torch.zeros(len(ids), max(map(len, ids)) - 1, dtype=torch.long)
    for row, c in enumerate(ids):
        inputs[row, : len(c) - 1] = torch.tensor(c[:-1])  # <start> w1 .. wn: step k emits word k
    with torch.no_grad():
        _, alphas = net.eval()(images, inputs)
    return list(alphas), [[vocab.itos[i] for i in c[1:-1]] for c in ids]


@pytest.mark.parametrize("seed", [0, 1])  # one that looks away from objects, one that looks at them
def test_an_untrained_model_does_not_look_at_the_named_object_more_than_at_another(seed, test_scenes):
    from hydra import compose, initialize_config_dir

    from capgen.config import CONF_DIR
    from capgen.models import build_captioner
    from capgen.vocab import Vocabulary

    scenes, images = test_scenes
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train")
    vocab = Vocabulary.build((c for s in scenes for c in s.captions), max_len=24)
    multi = [i for i, s in enumerate(scenes) if len(s.objects) > 1]  # where another object exists
    scenes, images = [scenes[i] for i in multi], images[multi]
    torch.manual_seed(seed)
    net = build_captioner({"encoder": cfg.model.encoder, "decoder": cfg.model.decoder}, len(vocab))
    alphas, words = teacher_forced_attention(net, vocab, scenes, images)
    g = grounding_score(alphas, words, scenes, GRID, SIZE)
    renamed_score = grounding_score(alphas, words, [renamed(s) for s in scenes], GRID, SIZE).score
    assert g.n_words > 300
    # 0.06: three times the largest gap measured over six seeds (0.019), for both controls:
    # the `other` field (every other object) and renamed scenes (the next object only).
    assert abs(g.score - g.other) < 0.06 and abs(g.score - renamed_score) < 0.06, (g, renamed_score)
