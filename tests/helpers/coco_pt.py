"""A tiny course file coco.pt in the exact format of the EECS 498 one."""

from __future__ import annotations

import torch

TOKENS = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "cat", "on", "the", "grass", "red", "ball",
          "man", "riding", "bike", "down", "street", "with", "big", "small", "near", "tree"]
T = 17  # <START>, 15 words, <END>
# Which image each row shows; duplicates are deliberately not consecutive. In val, G has A's
# pixels (the same picture in both splits must still get two ids).
LAYOUT = {"train": "ACBADCAD", "val": "EFEG"}
CAPTIONS = {
    "train": [
        "a dog on the grass",
        "the red ball",
        "a cat",
        "a <UNK> dog",
        "<UNK> <UNK> near the tree",
        "a small red ball on the grass",
        "a man riding a bike down the street with a red ball near the tree",  # 15 words
        "a big tree",
    ],
    "val": ["a dog near a tree", "the man on the bike", "<UNK> on the street", "a big dog"],
}
VAL_OFFSET = 10_000_000


def encode_row(caption: str) -> list[int]:
    ids = [1, *(TOKENS.index(w) for w in caption.split()), 2]
    return ids + [0] * (T - len(ids))


def course_file() -> dict:
    g = torch.Generator().manual_seed(0)
    pixels = {k: torch.randint(0, 256, (3, 112, 112), generator=g, dtype=torch.uint8) for k in "ABCEF"}
    pixels["D"] = pixels["B"].clone()
    pixels["D"][1, 5, 7] ^= 1  # one bit away from B: still a different image
    pixels["G"] = pixels["A"].clone()
    data = {"vocab": {"idx_to_token": list(TOKENS), "token_to_idx": {t: i for i, t in enumerate(TOKENS)}}}
    for split, letters in LAYOUT.items():
        data[f"{split}_images"] = torch.stack([pixels[k] for k in letters])
        data[f"{split}_captions"] = torch.tensor([encode_row(c) for c in CAPTIONS[split]], dtype=torch.int64)
    return data
