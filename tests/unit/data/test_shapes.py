"""Tests for the synthetic shapes dataset (capgen.data.shapes)."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from capgen.data.shapes import COLOURS, MAX_WORDS, SHAPES, SIZES, ShapesSource
from capgen.tokenizer import tokenize

SIZE_WORDS = {"small": {"small", "little"}, "large": {"large", "big"}}
ALL_SIZE_WORDS = set().union(*SIZE_WORDS.values())
OBJECT_RELATIONS = {"left": "left", "right": "right", "above": "above", "over": "above",
                    "below": "below", "under": "below", "beneath": "below"}
LOCATION_WORDS = {"left", "right", "top", "bottom", "middle", "centre"}
N = 300  # scenes checked by the content tests


@pytest.fixture(scope="module")
def train():
    return ShapesSource("train", seed=3, sizes={"train": 1000})


@pytest.fixture(scope="module")
def scenes(train):
    return [train.scene(i) for i in range(N)]


def centre(obj):
    x0, y0, x1, y1 = obj.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def digest(img: np.ndarray) -> str:
    return hashlib.sha1(img.tobytes()).hexdigest()


# --- determinism and splits -------------------------------------------------------------------

def test_same_scene_and_pixels_in_any_access_order():
    a = ShapesSource("val", seed=7)
    b = ShapesSource("val", seed=7)
    idx = [0, 5, 123, 42, 499, 1]
    first = {i: (a.scene(i), a.image(i)) for i in idx}
    for i in reversed(idx):
        scene, img = b.scene(i), b.image(i)
        assert scene == first[i][0]
        assert img.dtype == np.uint8 and img.shape == (96, 96, 3)
        assert np.array_equal(img, first[i][1])
    # Re-reading an index after others does not change it either.
    assert np.array_equal(a.image(5), first[5][1])


def test_kept_images_and_scenes_equal_fresh_ones_and_stay_unchanged(monkeypatch):
    """Scenes and images are kept once made (no re-rendering each epoch): a kept image equals
    a fresh rendering, a caller writing into what it got cannot change it, a pickled source
    (a DataLoader worker's) carries no pixels, and a split over the memory budget keeps nothing."""
    import pickle

    import capgen.data.shapes as shapes

    kept = ShapesSource("val", seed=7, sizes={"val": 20})
    first = kept.image(3)
    first[:] = 0  # the caller's copy
    again = kept.image(3)
    assert kept.scene(3) is kept.scene(3)  # kept, not rebuilt
    assert np.array_equal(again, kept._render(3)) and again.any()
    assert np.array_equal(again, ShapesSource("val", seed=7, sizes={"val": 20})._render(3))
    assert kept._made.sum() == 1
    clone = pickle.loads(pickle.dumps(kept))
    assert clone._pixels is None and clone._scenes == {} and np.array_equal(clone.image(3), again)
    assert len(pickle.dumps(kept)) < 10_000  # settings only, not the (20, 96, 96, 3) pixels

    monkeypatch.setattr(shapes, "_KEEP_BYTES", 20 * 96 * 96 * 3 - 1)  # one byte short of the split
    over = ShapesSource("val", seed=7, sizes={"val": 20})
    assert np.array_equal(over.image(3), again)
    assert over._pixels is None and over._scenes == {}


def test_seed_changes_the_data():
    a, b = ShapesSource("train", seed=0), ShapesSource("train", seed=1)
    assert [a.captions(i) for i in range(10)] != [b.captions(i) for i in range(10)]
    assert not np.array_equal(a.image(0), b.image(0))


def test_splits_are_disjoint_and_ids_unique():
    sizes = {"train": 300, "val": 100, "test": 100}
    sources = {s: ShapesSource(s, seed=0, sizes=sizes) for s in sizes}
    hashes, ids = {}, []
    for split, src in sources.items():
        assert len(src) == sizes[split]
        hashes[split] = {digest(src.image(i)) for i in range(len(src))}
        assert len(hashes[split]) == len(src)  # no repeats within a split either
        ids += [src.image_id(i) for i in range(len(src))]
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) for i in ids)
    # Backgrounds differ too, not just the objects: compare pixels free of objects in both.
    for i in range(20):
        a, b = sources["train"], sources["val"]
        free = np.ones((96, 96), bool)
        for o in a.scene(i).objects + b.scene(i).objects:
            free[o.box[1] : o.box[3], o.box[0] : o.box[2]] = False
        assert (a.image(i)[free] != b.image(i)[free]).mean() > 0.5


def test_sizes_default_and_configurable():
    assert [len(ShapesSource(s)) for s in ("train", "val", "test")] == [10000, 500, 500]
    src = ShapesSource("val", sizes={"val": 17})
    assert len(src) == 17
    assert len(ShapesSource("train", sizes={"val": 17})) == 10000  # other splits keep defaults
    src.scene(16)
    with pytest.raises(IndexError):
        src.scene(17)
    with pytest.raises(IndexError):
        src.image(-1)


SPLIT_NAMES = ("train", "val", "test")


@pytest.mark.parametrize(
    "kwargs, field, valid",
    [
        ({"split": "dev"}, "split", SPLIT_NAMES),
        ({"split": "train", "sizes": {"dev": 10}}, "sizes", SPLIT_NAMES),
        ({"split": "train", "sizes": {"train": -1}}, "sizes", ("int", "[0, ")),
        ({"split": "train", "sizes": {"train": 2.5}}, "sizes", ("int", "[0, ")),
        ({"split": "train", "sizes": {"val": 10**9}}, "sizes", ("int", "[0, ")),
        ({"split": "train", "captions_per_image": 0}, "captions_per_image", ("[1, ",)),
        ({"split": "train", "image_size": 8}, "image_size", (">=",)),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, field, valid):
    with pytest.raises(ValueError, match=field) as err:
        ShapesSource(**kwargs)
    assert all(v in str(err.value) for v in valid), str(err.value)


# --- captions ---------------------------------------------------------------------------------

def test_five_distinct_plain_captions(train, scenes):
    for i, scene in enumerate(scenes):
        assert len(scene.captions) == 5
        assert len(set(scene.captions)) == 5
        assert train.captions(i) == list(scene.captions)
        for caption in scene.captions:
            words = tokenize(caption)
            assert caption == caption.lower()
            assert all(w.isalpha() for w in words)
            assert caption.replace(" ,", "").split() == words  # nothing but words and one comma
            assert 1 <= len(words) <= MAX_WORDS


def test_captions_name_every_object_and_nothing_else(scenes):
    for scene in scenes:
        objs = scene.objects
        for caption, owners in zip(scene.captions, scene.word_objects):
            words = tokenize(caption)
            assert len(owners) == len(words)
            for w, k in zip(words, owners):
                if k != -1:
                    o = objs[k]
                    assert w in SIZE_WORDS[o.size] | {o.colour, o.shape}, (caption, w, k)
                # Every size, colour and shape word belongs to the object it is aligned to.
                elif w in ALL_SIZE_WORDS or w in COLOURS or w in SHAPES:
                    pytest.fail(f"unaligned object word {w!r} in {caption!r}")
            for k, o in enumerate(objs):
                named = [w for w, j in zip(words, owners) if j == k]
                assert is_subsequence([SIZE_WORDS[o.size], {o.colour}, {o.shape}], named), (caption, o)
            assert {w for w in words if w in COLOURS} <= {o.colour for o in objs}
            assert {w for w in words if w in SHAPES} <= {o.shape for o in objs}


def is_subsequence(pattern: list[set], words: list[str]) -> bool:
    it = iter(words)
    return all(any(w in options for w in it) for options in pattern)


def relation_mentions(words, owners):
    """(subject, relation, object) for every object-to-object relation phrase in a caption."""
    out = []
    for k, w in enumerate(words):
        if w in ("left", "right") and words[k + 1 : k + 2] != ["of"]:
            continue  # "on the left", "top left corner": a place in the image, not a relation
        if w not in OBJECT_RELATIONS:
            continue
        before = [j for j in owners[:k] if j != -1]
        after = [j for j in owners[k + 1 :] if j != -1]
        out.append((before[-1], OBJECT_RELATIONS[w], after[0]))
    return out


def test_relations_are_geometrically_true(scenes):
    checked = Counter()
    for scene in scenes:
        objs = scene.objects
        for caption, owners in zip(scene.captions, scene.word_objects):
            words = tokenize(caption)
            mentions = relation_mentions(words, owners)
            assert len(mentions) == len(objs) - 1, caption  # n objects are tied by n - 1 relations
            for a, rel, b in mentions:
                assert a != b
                (ax, ay), (bx, by) = centre(objs[a]), centre(objs[b])
                dx, dy = ax - bx, ay - by
                horizontal = abs(dx) >= abs(dy)
                expected = ("left" if dx < 0 else "right") if horizontal else ("above" if dy < 0 else "below")
                assert rel == expected, (caption, objs[a].box, objs[b].box)
                checked[rel] += 1
    assert set(checked) == {"left", "right", "above", "below"}


def test_lone_object_location_is_true(train, scenes):
    n = train.image_size
    cells = Counter()
    for scene in scenes:
        if len(scene.objects) != 1:
            continue
        cx, cy = centre(scene.objects[0])
        row, col = min(int(3 * cy / n), 2), min(int(3 * cx / n), 2)
        for caption in scene.captions:
            words = set(tokenize(caption))
            assert words & LOCATION_WORDS, caption
            assert ("top" in words) == (row == 0) and ("bottom" in words) == (row == 2), caption
            assert ("left" in words) == (col == 0) and ("right" in words) == (col == 2), caption
            assert bool(words & {"middle", "centre"}) == ((row, col) == (1, 1)), caption
        cells[row, col] += 1
    assert len(cells) >= 8  # lone objects land all over the grid


def test_every_caption_has_a_spatial_word(scenes):
    spatial = set(OBJECT_RELATIONS) | LOCATION_WORDS
    for scene in scenes:
        for caption in scene.captions:
            assert spatial & set(tokenize(caption)), caption


def skeleton(caption: str, owners) -> str:
    """The caption with object words and relation/location phrases replaced by placeholders."""
    words = ["O" if k != -1 else w for w, k in zip(tokenize(caption), owners)]
    text = " " + " ".join(words) + " "
    for phrase in ("to the left of", "to the right of", "left of", "right of", "above", "over",
                   "below", "under", "beneath"):
        text = text.replace(f" {phrase} ", " R ")
    return text.strip()


def test_enough_templates(scenes):
    by_count = {1: set(), 2: set(), 3: set()}
    for scene in scenes:
        for caption, owners in zip(scene.captions, scene.word_objects):
            by_count[len(scene.objects)].add(skeleton(caption, owners))
    assert len(by_count[2]) >= 6, by_count[2]
    assert len(by_count[3]) >= 6, by_count[3]
    # One-object captions: strip the location phrase words too, which vary with the place.
    lone = {" ".join(w for w in s.split() if w not in LOCATION_WORDS | {"in", "at", "on", "near", "the", "corner"})
            for s in by_count[1]}
    assert len(lone) >= 5, lone


def test_captions_per_image_is_configurable():
    src = ShapesSource("train", captions_per_image=3)
    for i in range(20):
        assert len(set(src.captions(i))) == 3


# --- layout and rendering ---------------------------------------------------------------------

def test_layout(train, scenes):
    n = train.image_size
    counts, shapes, colours, sizes = Counter(), set(), set(), set()
    for scene in scenes:
        objs = scene.objects
        counts[len(objs)] += 1
        assert len({(o.shape, o.colour) for o in objs}) == len(objs)
        for o in objs:
            shapes.add(o.shape), colours.add(o.colour), sizes.add(o.size)
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n
            side = (x1 - x0) / n
            assert (0.13 <= side <= 0.21) if o.size == "small" else (0.27 <= side <= 0.39), o
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                p, q = objs[a].box, objs[b].box
                gap = max(q[0] - p[2], p[0] - q[2], q[1] - p[3], p[1] - q[3])
                assert gap >= 2, (p, q)
    assert set(counts) == {1, 2, 3} and min(counts.values()) > N // 6
    assert shapes == set(SHAPES) and colours == set(COLOURS) and sizes == set(SIZES)


# Fraction of its square box each shape covers.
AREA = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}


def test_rendering_matches_the_scene(train):
    gaps = []
    for i in range(150):
        scene, img = train.scene(i), train.image(i).astype(float)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            core = img[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            assert np.all(np.abs(core - COLOURS[o.colour]) < 30), (o, core)
            # A 1-px frame just outside the box is pure background (boxes are >= 2 px apart).
            frame = img[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1].astype(float)
            ring = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
            gaps.append(np.linalg.norm(core - ring.mean(0)))
            # The drawn shape covers the expected share of its box, pointing the right way.
            inside = np.linalg.norm(img[y0:y1, x0:x1] - core, axis=-1) < 45
            assert abs(inside.mean() - AREA[o.shape]) < 0.1, (o, inside.mean())
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), o
            if o.shape == "triangle":
                half = inside.shape[0] // 2
                assert inside[:half].sum() < 0.6 * inside[half:].sum(), o
    assert min(gaps) > 60, min(gaps)


def test_background_is_varied_and_noisy(train):
    means, stds = [], []
    for i in range(40):
        scene, img = train.scene(i), train.image(i).astype(float)
        free = np.ones(img.shape[:2], bool)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            free[y0:y1, x0:x1] = False
        bg = img[free]
        means.append(bg.mean(0))
        # Neighbouring-pixel differences measure noise without the gradient.
        stds.append(np.diff(img, axis=1)[free[:, 1:] & free[:, :-1]].std())
    assert np.ptp(np.array(means), axis=0).min() > 40  # base colours differ from image to image
    assert min(stds) > 3  # per-pixel noise everywhere


def test_other_image_sizes_scale():
    src = ShapesSource("train", image_size=64)
    for i in range(30):
        img = src.image(i)
        assert img.shape == (64, 64, 3)
        for o in src.scene(i).objects:
            assert o.box[2] <= 64 and o.box[3] <= 64
