"""Tiny real-format data sets written to disk, for tests of file-based sources.

Each `make_*` function writes files in the exact layout and JSON formats of the real data
set under `root` and returns the facts a test checks against (ids per split, captions per
id, file paths), computed here and not by the code under test.

    make_coco2014(root)   train2014/ val2014/ annotations/captions_{train,val}2014.json
                          dataset_coco.json (Karpathy's splits)
    make_flickr(root, v)  Flicker8k_Dataset/ or flickr30k-images/, dataset_flickr{8k,30k}.json
    make_custom(root, f)  images/ (with a sub-folder) and a captions file for data=custom:
                          captions.jsonl, captions.csv or a Karpathy-format mydata.json
    make_odd_images(dir)  one file per awkward or broken kind of image file
    write_png16(path, a)  a 16-bit PNG of any channel count (PIL writes only 16-bit grey)
    edit_json(path, fn)   change a written JSON file in place (to plant a fault)
"""

from __future__ import annotations

import csv
import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# Captions draw on these words; VAL_TEST_WORD appears only in Karpathy val/test captions and
# RESTVAL_WORD only in restval captions, so a test can tell which splits a vocabulary saw.
WORDS = "a man woman dog cat riding sitting on the beach street bench red small near with".split()
VAL_TEST_WORD = "zebra"
RESTVAL_WORD = "giraffe"
LONG_WORDS = 21  # one caption per image is this long, past the usual 16-word max_len
PUNCTUATED = "A dog, running on the beach... isn't it?"

# Upright EXIF picture: top half red, bottom half blue, 30 wide and 40 tall.
RED, BLUE = (220, 30, 30), (30, 30, 220)
EXIF_UPRIGHT_SIZE = (30, 40)  # (width, height) after the orientation tag is applied
CMYK_RGB = (200, 60, 30)  # the colour the CMYK file shows


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A small RGB JPEG of a random colour block pattern; `size` is (width, height)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)  # 3x4 grid of colours
    pixels = np.kron(blocks, np.ones((size[1] // 3 + 1, size[0] // 4 + 1, 1), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[: size[1], : size[0]]).save(path, "JPEG", quality=90)
    return path


def make_captions(rng: random.Random, n: int, extra: str | None = None) -> list[str]:
    """n captions: the first is LONG_WORDS long, the second punctuated, the rest short.

    `extra` (a word) goes into every caption, to mark the image's split.
    """
    out = []
    for k in range(n):
        length = LONG_WORDS if k == 0 else rng.randint(5, 10)
        words = [rng.choice(WORDS) for _ in range(length)]
        if extra:
            words[rng.randrange(length)] = extra
        out.append(PUNCTUATED if k == 1 else " ".join(words).capitalize())
    return out


def make_coco2014(root: Path, n_train: int = 6, n_val: int = 6, with_karpathy: bool = True, odd_images: bool = True) -> dict:
    """COCO 2014 in its official layout, plus Karpathy's dataset_coco.json if asked.

    Each image has 5 to 7 captions (the official annotations list them shuffled across
    images, as the real file does). Karpathy's splits: every train2014 image is "train"; the
    val2014 images go round-robin to "restval", "val" and "test". With `odd_images`, four
    images are awkward but readable files: grayscale, CMYK, PNG bytes named .jpg and EXIF-rotated.

    Returns {"official": {"train": ids, "val": ids}, "karpathy": {"train"|"val"|"test": ids},
    "captions": {id: [captions]}, "paths": {id: Path}, "karpathy_json": Path}; ids are in
    file order and are not contiguous (so index and id cannot be confused).
    """
    root = Path(root)
    rng = random.Random(0)
    facts: dict = {"official": {"train": [], "val": []}, "karpathy": {s: [] for s in ("train", "val", "test")}}
    facts["captions"], facts["paths"] = {}, {}
    karpathy_images, sentid = [], 0
    for part, n, first_id in (("train", n_train, 100_003), ("val", n_val, 500_017)):
        coco_images, annotations = [], []
        for i in range(n):
            image_id = first_id + 37 * i
            name = f"COCO_{part}2014_{image_id:012d}.jpg"
            path = root / f"{part}2014" / name
            write_jpeg(path, seed=image_id)
            kp_split = "train" if part == "train" else ("restval", "val", "test")[i % 3]
            extra = {"restval": RESTVAL_WORD, "val": VAL_TEST_WORD, "test": VAL_TEST_WORD}.get(kp_split)
            captions = make_captions(rng, 5 + i % 3, extra)
            coco_images.append({"license": 1, "file_name": name, "coco_url": "", "height": 30, "width": 40,
                                "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": image_id})
            annotations += [{"image_id": image_id, "id": 0, "caption": c} for c in captions]
            facts["official"][part].append(image_id)
            if kp_split in ("val", "test"):
                facts["karpathy"][kp_split].append(image_id)
            facts["captions"][image_id], facts["paths"][image_id] = captions, path
            karpathy_images.append({
                "filepath": f"{part}2014", "filename": name, "split": kp_split, "cocoid": image_id,
                "imgid": len(karpathy_images), "sentids": list(range(sentid, sentid + len(captions))),
                "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": len(karpathy_images), "sentid": sentid + j}
                              for j, c in enumerate(captions)],
            })
            sentid += len(captions)
        rng.shuffle(annotations)
        for k, a in enumerate(annotations):
            a["id"] = 1000 + k
        _write_json(root / "annotations" / f"captions_{part}2014.json", {
            "info": {"description": "COCO 2014 Dataset", "year": 2014}, "licenses": [{"id": 1, "name": "x", "url": ""}],
            "images": coco_images, "annotations": annotations,
        })
    # Karpathy's file lists the val2014 images first, so its train split (train + restval)
    # starts with the restval images.
    karpathy_images.sort(key=lambda e: e["filepath"] != "val2014")
    facts["karpathy"]["train"] = [e["cocoid"] for e in karpathy_images if e["split"] in ("train", "restval")]
    if with_karpathy:
        facts["karpathy_json"] = _write_json(root / "dataset_coco.json", {"images": karpathy_images, "dataset": "coco"})
    if odd_images:
        odd = make_odd_images(root / "odd")
        ids = facts["official"]["train"][:2] + facts["official"]["val"][:2]
        for image_id, kind in zip(ids, ("gray", "cmyk", "png_named_jpg", "exif_rotated")):
            facts["paths"][image_id].write_bytes(odd[kind].read_bytes())
    return facts


def make_flickr(root: Path, version: str = "8k", n: int = 9) -> dict:
    """Flickr8k or Flickr30k ("8k" | "30k") with Karpathy's split file; splits go round-robin.

    Returns {"splits": {"train"|"val"|"test": imgids}, "captions": {imgid: [captions]},
    "paths": {imgid: Path}, "image_dir": folder name, "karpathy_json": Path}.
    """
    root = Path(root)
    image_dir = {"8k": "Flicker8k_Dataset", "30k": "flickr30k-images"}[version]
    rng = random.Random(1)
    facts: dict = {"splits": {s: [] for s in ("train", "val", "test")}, "captions": {}, "paths": {}, "image_dir": image_dir}
    images = []
    for i in range(n):
        # The real names: 8k "1000268201_693b08cb0e.jpg", 30k "1000092795.jpg".
        name = f"{1000268201 + 977 * i}_{i:010x}.jpg" if version == "8k" else f"{1000092795 + 977 * i}.jpg"
        split = ("train", "val", "test")[i % 3]
        imgid = i  # Karpathy's imgid: the position in the file
        captions = make_captions(rng, 5, VAL_TEST_WORD if split != "train" else None)
        facts["paths"][imgid] = write_jpeg(root / image_dir / name, seed=i)
        facts["splits"][split].append(imgid)
        facts["captions"][imgid] = captions
        images.append({"filename": name, "split": split, "imgid": imgid, "sentids": list(range(5 * i, 5 * i + 5)),
                       "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": imgid, "sentid": 5 * i + j}
                                     for j, c in enumerate(captions)]})
    facts["karpathy_json"] = _write_json(root / f"dataset_flickr{version}.json", {"images": images, "dataset": f"flickr{version}"})
    return facts


def make_custom(root: Path, form: str = "jsonl", n: int = 12, with_split: bool = True, with_ids: bool = True,
                shuffle_rows: bool = False) -> dict:
    """A data=custom data set: n JPEGs under root/images/ (every third in images/more/) and one
    captions file: "jsonl" (captions.jsonl), "csv" (captions.csv) or "karpathy" (mydata.json,
    a Karpathy-format file whose "dataset" is "mydata"). Rows: one per caption, 3 to 5 per
    image, rows of different images interleaved (shuffled too with `shuffle_rows`). Splits go
    round-robin (a Karpathy file puts every fourth train image in restval); ids are 1000 + 7 k.

    Returns {"splits": {split: [file names (relative to images/), in file order]} (None without
    splits), "ids": {file: id} (None without ids), "captions": {file: [captions]},
    "paths": {file: Path}, "captions_file": Path}.
    """
    root = Path(root)
    rng = random.Random(7)
    files = [f"more/pic{k:02d}.jpg" if k % 3 == 2 else f"pic{k:02d}.jpg" for k in range(n)]
    splits = {f: ("train", "train", "val", "test")[k % 4] for k, f in enumerate(files)}
    ids = {f: 1000 + 7 * k for k, f in enumerate(files)}
    facts: dict = {"captions": {}, "paths": {}}
    for k, f in enumerate(files):
        facts["paths"][f] = write_jpeg(root / "images" / f, seed=100 + k)
        facts["captions"][f] = make_captions(rng, 3 + k % 3, VAL_TEST_WORD if splits[f] != "train" else None)[2:] + [
            f"A small dog near the {rng.choice(WORDS)} bench", "The man, sitting on a red bench."]
    rows = [{"file": f, "caption": c, **({"split": splits[f]} if with_split else {}), **({"image_id": ids[f]} if with_ids else {})}
            for j in range(5) for f in files for c in facts["captions"][f][j:j + 1]]
    if shuffle_rows:
        random.Random(3).shuffle(rows)
    facts["splits"] = {s: [f for f in files if splits[f] == s] for s in ("train", "val", "test")} if with_split else None
    facts["ids"] = ids if with_ids else None
    if form == "jsonl":
        path = root / "captions.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif form == "csv":
        path = root / "captions.csv"
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif form == "karpathy":
        images = [{"filepath": "images", "filename": f, "imgid": ids[f],
                   "split": "restval" if splits[f] == "train" and k % 8 == 0 else splits[f],
                   "sentences": [{"raw": c, "tokens": c.lower().split()} for c in facts["captions"][f]]}
                  for k, f in enumerate(files)]
        path = _write_json(root / "mydata.json", {"images": images, "dataset": "mydata"})
    else:
        raise ValueError(form)
    facts["captions_file"] = path
    return facts


def make_odd_images(folder: Path) -> dict[str, Path]:
    """One file per awkward kind, named <kind>.jpg (all but "missing" exist).

    Readable: "gray" (L-mode JPEG, value 128), "cmyk" (CMYK JPEG showing CMYK_RGB), "palette"
    (P-mode PNG), "rgba" (RGBA PNG), "png_named_jpg" (PNG bytes in a .jpg file), "exif_rotated"
    (stored sideways with orientation tag 6, upright it is EXIF_UPRIGHT_SIZE with RED on top
    and BLUE below). Unreadable: "truncated" (a JPEG cut in half), "empty" (0 bytes), "text"
    (a text file), "missing" (no file).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{kind}.jpg" for kind in (
        "gray", "cmyk", "palette", "rgba", "png_named_jpg", "exif_rotated", "truncated", "empty", "text", "missing")}
    Image.new("L", (40, 30), 128).save(paths["gray"], "JPEG", quality=95)
    Image.new("RGB", (40, 30), CMYK_RGB).convert("CMYK").save(paths["cmyk"], "JPEG", quality=95)
    Image.new("RGB", (40, 30), (10, 200, 90)).convert("P").save(paths["palette"], "PNG")
    Image.new("RGBA", (40, 30), (10, 200, 90, 128)).save(paths["rgba"], "PNG")
    Image.new("RGB", (40, 30), (10, 200, 90)).save(paths["png_named_jpg"], "PNG")

    w, h = EXIF_UPRIGHT_SIZE
    upright = np.zeros((h, w, 3), dtype=np.uint8)
    upright[: h // 2], upright[h // 2:] = RED, BLUE
    # Orientation 6 means "turn the stored pixels 90 degrees clockwise to show them", so
    # store the upright picture turned 90 degrees counter-clockwise (red ends up on the left).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright, k=1).copy()).save(paths["exif_rotated"], "JPEG", quality=95, exif=exif)

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    paths["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("this is not an image\n")
    return paths


def write_png16(path: Path, samples: np.ndarray) -> Path:
    """`samples` (H, W) or (H, W, C) with C = 2 (grey, alpha), 3 (RGB) or 4 (RGBA), values
    0..65535, as a 16-bit PNG written chunk by chunk: PIL saves 16-bit PNGs of one channel only."""
    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.asarray(samples, dtype=">u2").reshape(height, width * channels)  # PNG is big-endian
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # each row: filter type 0 (none), samples

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)  # deflate, standard filters, no interlace
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    """Load the JSON file at `path`, let `change` modify it in place, write it back."""
    data = json.loads(Path(path).read_text())
    change(data)
    _write_json(Path(path), data)


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
