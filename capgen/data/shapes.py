"""The built-in synthetic captioning dataset: coloured shapes on a noisy background.

Nothing is stored or downloaded. Every scene (objects, boxes, captions) and every image is a
pure function of (seed, split, index), so any process can rebuild any example in any order,
and the train/val/test splits never share a scene.

Scenes are cheap (pure Python, no pixels) because the vocabulary is built from the captions
of every training scene; pixels are only made when an image is asked for. Once made, a
split's scenes and images are kept in memory (while its pixels take at most _KEEP_BYTES: the
default train split's take 276 MB): every epoch asks for the same ones again, and rendering
an image costs about 0.5 ms, which a DataLoader worker making them anew each epoch takes from
the training process's cores (on 2 cores, 1.4x the training step's time; see
docs/performance.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
}
SIZES = ("small", "large")

SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 10000, "val": 500, "test": 500}
_ID_STRIDE = 10_000_000  # image_id = split_code * stride + i, so ids never collide across splits
MAX_WORDS = 24  # longest caption the templates may produce
_KEEP_BYTES = 1 << 30  # a split whose pixels fit keeps its scenes and images once made

# Object side as a fraction of the image width, per size word (kept well apart so that
# "small" and "large" are visibly different at every image size).
_SIDE_FRACTION = {"small": (0.14, 0.20), "large": (0.28, 0.38)}
_MARGIN = 2  # min free pixels between two boxes, so objects never touch
_PLACE_TRIES = 50  # positions tried per object before giving up on it

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
# Relation of one object to another, named from its box centre relative to the other's.
_RELATION_WORDS = {
    "left": (("to", "the", "left", "of"), ("left", "of")),
    "right": (("to", "the", "right", "of"), ("right", "of")),
    "above": (("above",), ("over",)),
    "below": (("below",), ("under",), ("beneath",)),
}
# Where a lone object sits, by cell of a 3x3 grid over the image: (row, column).
_LOCATIONS = {
    (0, 0): ("in the top left corner", "at the top left"),
    (0, 1): ("at the top", "near the top"),
    (0, 2): ("in the top right corner", "at the top right"),
    (1, 0): ("on the left", "at the left"),
    (1, 1): ("in the middle", "in the centre"),
    (1, 2): ("on the right", "at the right"),
    (2, 0): ("in the bottom left corner", "at the bottom left"),
    (2, 1): ("at the bottom", "near the bottom"),
    (2, 2): ("in the bottom right corner", "at the bottom right"),
}
_LOCATION_WORDS = {cell: tuple(tuple(p.split()) for p in ps) for cell, ps in _LOCATIONS.items()}

# Caption templates. Slots: {X} {Y} {Z} noun phrases "a <size> <colour> <shape>";
# {x} {y} short references "the <shape>" ("the <colour> <shape>" when X and Y share a shape);
# {w} "the <colour> <shape>" of W, the object Z is placed relative to; {XY} relation of X to
# Y, {YX} of Y to X, {ZW} of Z to W; {loc} where the lone object X is in the image.
# A template's fixed words differ from every other's, so two templates can only give the same
# caption through the X/Y swap of "{X} {XY} {Y}" and "{Y} {YX} {X}".
_TEMPLATES_1 = (
    "{X} {loc}",
    "there is {X} {loc}",
    "{X} is {loc}",
    "a picture of {X} {loc}",
    "we can see {X} {loc}",
    "the image shows {X} {loc}",
    "{loc} there is {X}",
)
_TEMPLATES_2 = (
    "{X} {XY} {Y}",
    "there is {X} {XY} {Y}",
    "{X} is {XY} {Y}",
    "a picture of {X} {XY} {Y}",
    "we can see {X} {XY} {Y}",
    "the image shows {X} {XY} {Y}",
    "{Y} {YX} {X}",
    "{X} and {Y} , the {x} is {XY} the {y}",
)
# The comma template would run past MAX_WORDS once the third object is appended.
_TEMPLATES_3 = tuple(t + " and {Z} {ZW} {w}" for t in _TEMPLATES_2 if "," not in t)
_TEMPLATES = {1: _TEMPLATES_1, 2: _TEMPLATES_2, 3: _TEMPLATES_3}
MAX_CAPTIONS = min(len(t) for t in _TEMPLATES.values()) - 1  # one spare for the X/Y-swap clash


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]  # 1 to 3
    captions: tuple[str, ...]  # distinct reference captions
    # Per caption, aligned with tokenize(caption): index of the object a word names (its size,
    # colour or shape word), else -1. The data set's ground truth of which words name which
    # object: the tests check every caption against the geometry with it.
    word_objects: tuple[tuple[int, ...], ...]


class ShapesSource:
    """One split of the dataset."""

    # Each split's scenes come from a stream of their own, (seed, split, index): no setting puts
    # a training scene in another split (see image_files.ImageFileSource.SPLIT_SETTINGS).
    SPLIT_SETTINGS: tuple[str, ...] = ()

    def __init__(
        self,
        split: str,
        seed: int = 0,
        sizes: dict | None = None,
        image_size: int = 96,
        captions_per_image: int = 5,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        sizes = dict(sizes or {})
        unknown = set(sizes) - set(SPLITS)
        if unknown:
            raise ValueError(f"sizes has unknown split(s) {sorted(unknown)}; valid splits are {SPLITS}")
        sizes = {**DEFAULT_SIZES, **sizes}
        for name, n in sizes.items():
            if not _is_int(n) or not 0 <= n < _ID_STRIDE:
                raise ValueError(f"sizes[{name!r}] must be an int in [0, {_ID_STRIDE}), got {n!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not _is_int(image_size) or image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
        if not _is_int(captions_per_image) or not 1 <= captions_per_image <= MAX_CAPTIONS:
            raise ValueError(f"captions_per_image must be an int in [1, {MAX_CAPTIONS}], got {captions_per_image!r}")
        self.split = split
        self.seed = int(seed)
        self.size = int(sizes[split])
        self.image_size = int(image_size)
        self.captions_per_image = int(captions_per_image)
        self._code = SPLITS.index(split)
        self._keep = self.size * self.image_size**2 * 3 <= _KEEP_BYTES
        self._forget()

    def _forget(self) -> None:
        """Drop what was kept: scenes by index, and the images made so far (rows of one
        (N, S, S, 3) array, allocated on the first image, and which of its rows are made)."""
        self._scenes: dict[int, Scene] = {}
        self._pixels: np.ndarray | None = None
        self._made: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # A DataLoader worker or a spawned process gets the settings only, not 276 MB of pixels.
        state = dict(self.__dict__)
        state.update(_scenes={}, _pixels=None, _made=None)
        return state

    def __len__(self) -> int:
        return self.size

    def _check(self, i: int) -> int:
        if not _is_int(i) or not 0 <= i < self.size:
            raise IndexError(f"index {i!r} out of range for {self.split} split of size {self.size}")
        return int(i)

    def scene(self, i: int) -> Scene:
        i = self._check(i)
        kept = self._scenes.get(i)
        if kept is not None:
            return kept
        # numpy's SeedSequence hashes (seed, split, i) into well-mixed independent state; the
        # draws themselves come from Python's Random, whose scalar calls are ~10x cheaper than
        # a numpy Generator's and keep scene() within budget. random() (the only method used)
        # is guaranteed to give the same sequence for an int seed across Python versions.
        state = np.random.SeedSequence([self.seed, self._code, i]).generate_state(2, np.uint64)
        r = random.Random(int(state[0]) ^ (int(state[1]) << 64))
        objects = _layout(r, self.image_size)
        captions, owners = _captions(r, objects, self.image_size, self.captions_per_image)
        scene = Scene(objects, captions, owners)
        if self._keep:
            self._scenes[i] = scene
        return scene

    def captions(self, i: int) -> list[str]:
        return list(self.scene(i).captions)

    def image_id(self, i: int) -> int:
        return self._code * _ID_STRIDE + self._check(i)

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) rendering of scene(i) (a copy of the kept one once it was made)."""
        i = self._check(i)
        if not self._keep:
            return self._render(i)
        if self._pixels is None:  # pages are only committed as rows are written
            self._pixels = np.empty((self.size, self.image_size, self.image_size, 3), np.uint8)
            self._made = np.zeros(self.size, bool)
        if not self._made[i]:
            self._pixels[i] = self._render(i)
            self._made[i] = True
        return self._pixels[i].copy()

    def _render(self, i: int) -> np.ndarray:
        scene = self.scene(i)
        # Pixel randomness has its own child stream, so scene() never has to draw it.
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._code, i], spawn_key=(1,)))
        n = self.image_size
        img = _background(rng, n)
        # One noise field for the whole image: the background gets all of it, objects a
        # damped share, so they read as flat-ish but not perfectly clean patches.
        noise = rng.standard_normal((n, n, 3), dtype=np.float32)
        img += 8.0 * noise
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            mask = _shape_mask(obj.shape, x1 - x0)[..., None]
            # A small per-object shift of the colour, so one colour name covers a little range.
            colour = np.asarray(COLOURS[obj.colour], np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
            patch = colour + 4.0 * noise[y0:y1, x0:x1]
            img[y0:y1, x0:x1] = np.where(mask, patch, img[y0:y1, x0:x1])
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# --- layout -----------------------------------------------------------------------------------

def _pick(r: random.Random, seq):
    return seq[int(r.random() * len(seq))]


def _shuffled(r: random.Random, seq) -> list:
    """Fisher-Yates with random() only (see the seeding note in ShapesSource.scene)."""
    out = list(seq)
    for k in range(len(out) - 1, 0, -1):
        j = int(r.random() * (k + 1))
        out[k], out[j] = out[j], out[k]
    return out


def _apart(a: tuple, b: tuple) -> bool:
    """Boxes a and b leave at least _MARGIN free pixels between them on some axis."""
    return a[2] + _MARGIN <= b[0] or b[2] + _MARGIN <= a[0] or a[3] + _MARGIN <= b[1] or b[3] + _MARGIN <= a[1]


def _layout(r: random.Random, n: int) -> tuple[ShapeObject, ...]:
    count = 1 + int(r.random() * 3)
    # Distinct (shape, colour) pairs, so "the <colour> <shape>" always names exactly one object.
    pairs = _shuffled(r, [(s, c) for s in SHAPES for c in COLOURS])[:count]
    objects: list[ShapeObject] = []
    for shape, colour in pairs:
        size = _pick(r, SIZES)
        lo, hi = _SIDE_FRACTION[size]
        side = round(n * (lo + (hi - lo) * r.random()))
        # Rejection sampling of the position; if the image is too full after a bounded number
        # of tries the object is dropped, so the scene just has fewer objects.
        for _ in range(_PLACE_TRIES):
            x0 = int(r.random() * (n - side + 1))
            y0 = int(r.random() * (n - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, o.box) for o in objects):
                objects.append(ShapeObject(shape, colour, size, box))
                break
    return tuple(objects)


# --- captions ---------------------------------------------------------------------------------

def _relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where a is relative to b, from the box centres (image y grows downward)."""
    # Doubled centres keep this in integers.
    dx = (a.box[0] + a.box[2]) - (b.box[0] + b.box[2])
    dy = (a.box[1] + a.box[3]) - (b.box[1] + b.box[3])
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _location(obj: ShapeObject, n: int) -> tuple[int, int]:
    """(row, column) of the 3x3 image grid cell holding the box centre."""
    x2, y2 = obj.box[0] + obj.box[2], obj.box[1] + obj.box[3]  # doubled centre
    return min(3 * y2 // (2 * n), 2), min(3 * x2 // (2 * n), 2)


def _fill(r: random.Random, template: str, objects: tuple[ShapeObject, ...], n: int):
    """One caption from a template: (words, owner object index per word)."""
    order = _shuffled(r, range(len(objects)))  # which object plays X, Y, Z in this caption
    roles = dict(zip("XYZ", order))
    if len(objects) == 3:
        roles["W"] = _pick(r, (roles["X"], roles["Y"]))

    def ob(role: str) -> ShapeObject:
        return objects[roles[role]]

    def noun_phrase(k: int):
        o = objects[k]
        return ["a", _pick(r, _SIZE_WORDS[o.size]), o.colour, o.shape], [-1, k, k, k]

    def reference(k: int, with_colour: bool):
        o = objects[k]
        if with_colour:
            return [o.colour, o.shape], [k, k]
        return [o.shape], [k]

    words: list = []  # a str, or a tuple of word-sequence choices to settle once lengths are known
    owners: list = []
    for part in template.split():
        if part in ("{X}", "{Y}", "{Z}"):
            w, k = noun_phrase(roles[part[1]])
        elif part in ("{x}", "{y}"):
            w, k = reference(roles[part[1].upper()], ob("X").shape == ob("Y").shape)
        elif part == "{w}":
            w, k = ["the", *reference(roles["W"], True)[0]], [-1, roles["W"], roles["W"]]
        elif part in ("{XY}", "{YX}", "{ZW}"):
            w, k = [_RELATION_WORDS[_relation(ob(part[1]), ob(part[2]))]], [None]
        elif part == "{loc}":
            w, k = [_LOCATION_WORDS[_location(ob("X"), n)]], [None]
        else:
            w, k = [part], [-1]
        words += w
        owners += k

    # Settle each phrase slot left to right, choosing only among synonyms short enough that
    # the caption can still end within MAX_WORDS given the shortest choice for later slots.
    slots = [j for j, w in enumerate(words) if isinstance(w, tuple)]
    fixed = len(words) - len(slots) - words.count(",")
    shortest = [min(len(p) for p in words[j]) for j in slots]
    budget = MAX_WORDS - fixed
    for s, j in enumerate(slots):
        limit = budget - sum(shortest[s + 1:])
        phrase = _pick(r, [p for p in words[j] if len(p) <= limit])
        budget -= len(phrase)
        words[j], owners[j] = phrase, None
    out_words, out_owners = [], []
    for w, k in zip(words, owners):
        if isinstance(w, tuple):
            out_words += w
            out_owners += [-1] * len(w)
        else:
            out_words.append(w)
            if w != ",":  # the tokenizer drops punctuation; the alignment follows it
                out_owners.append(k)
    return out_words, out_owners


def _captions(r: random.Random, objects: tuple[ShapeObject, ...], n: int, k: int):
    """k distinct captions, each from a different template, with their word->object alignment."""
    found: dict[str, tuple[int, ...]] = {}
    for template in _shuffled(r, _TEMPLATES[len(objects)]):
        # Only the X/Y swap of the plain and inverse templates can repeat an earlier caption;
        # a few fresh draws of order and synonyms almost always break the tie, and if not the
        # next template is certain to differ.
        for _ in range(4):
            words, owners = _fill(r, template, objects, n)
            caption = " ".join(words)
            if caption not in found:
                found[caption] = tuple(owners)
                break
        if len(found) == k:
            break
    assert len(found) == k, "templates could not give enough distinct captions"
    return tuple(found), tuple(found.values())


# --- rendering --------------------------------------------------------------------------------

def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 (n, n, 3): a dim, low-saturation base colour plus a linear gradient.

    Grey levels stay within ~[5, 185] and tints within +-15, so each object colour (all
    strongly saturated) stands clear of any background it lands on.
    """
    base = rng.uniform(40, 150) + rng.uniform(-15, 15, 3)
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0, 35)
    t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    ramp = strength * (math.cos(angle) * t[None, :] + math.sin(angle) * t[:, None]) / math.sqrt(2)
    return ramp[..., None] + base.astype(np.float32)


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """bool (side, side) mask of a shape that touches all four edges of its square box."""
    c = np.arange(side) + 0.5 - side / 2  # pixel-centre offsets from the box centre
    dy, dx = c[:, None], c[None, :]
    half = side / 2
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= half
    if shape == "triangle":
        # Pointing up: half-width grows from 1/2 px in the top row to side/2 in the bottom row.
        rows = np.arange(1, side + 1)[:, None]
        return np.abs(dx) <= rows / 2
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
