"""The statistics capgen-eval adds to its scores: of the captions (one per image) and, when an
image has several (n-best, samples), of their diversity; see capgen.metrics.caption_stats and
capgen.metrics.diversity for what each one is.
"""

from __future__ import annotations

import logging

from ...metrics.caption_stats import caption_statistics
from ...metrics.diversity import diversity_statistics

log = logging.getLogger(__name__)


def training_captions(datamodule) -> tuple[list[str] | None, str]:
    """(every reference caption of the training split, "") or (None, why it cannot be read)."""
    try:
        references = datamodule.references("train")
    except (FileNotFoundError, ValueError) as e:  # its files missing or damaged: the scores stand without it
        note = f"the training split could not be read ({e})"
        log.warning("novel_percent left out: %s", note)
        return None, note
    if not references:
        return None, "the training split has no images"
    return [c for captions in references.values() for c in captions], ""


def corpus_statistics(rows: list[dict], datamodule, tokenizer: str) -> dict:
    """vocabulary, mean_length, unique_percent and novel_percent of each image's caption (its first,
    with n_best > 1)."""
    training, note = training_captions(datamodule)
    stats = caption_statistics([r["caption"] for r in rows], training, tokenizer)
    return {**stats, "novel_note": note} if note else stats


def diversity(captions: dict[int, list[str]], references: dict[int, list[str]], tokenizer: str,
              rows: list[dict] | None = None) -> dict:
    """Div-1, Div-2, mBLEU-4 and self-CIDEr of each image's several captions (image id -> its
    captions, n-best or samples), averaged over images for metrics.json; each of `rows` (the
    captions.jsonl rows) whose image is in `captions` gets its image's own values."""
    means, per_image = diversity_statistics(captions, references, tokenizer)
    for row in rows or []:
        row.update(per_image.get(row["image_id"], {}))
    return means
