"""Caption scores as a torchmetrics Metric, computed by the official pycocoevalcap scorers.

The metric's state holds tensors only (image ids and generated token ids), so Lightning
gathers it across DDP ranks with an ordinary all-gather; references stay on every rank as a
plain dict. Images that the distributed sampler repeated to even out the last batch are
scored once (deduplicated by image id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from torchmetrics import Metric

from .vocab import Vocabulary, tokenize


def score_captions(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 (closest reference length) and CIDEr-D over the images in `predictions`.

    Captions are tokenized with capgen's COCO-style tokenizer, then handed to the scorers as
    space-joined tokens, which is what the official pipeline feeds them.
    """
    if not predictions:
        raise ValueError("no captions to score")
    missing = [i for i in predictions if i not in references]
    if missing:
        raise KeyError(f"no references for image ids {missing[:5]} (of {len(missing)})")
    res = {i: [" ".join(tokenize(c))] for i, c in predictions.items()}
    gts = {i: [" ".join(tokenize(r)) for r in references[i]] for i in predictions}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    scores = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["CIDEr"] = float(cider)
    return scores


class CaptionScores(Metric):
    """update(image_ids (B,), tokens (B, L)) per batch; compute() -> {"BLEU-1": ..., "CIDEr": ...}."""

    full_state_update = False

    def __init__(self, vocab: Vocabulary, references: Mapping[int, Sequence[str]] | None = None):
        super().__init__()
        self.vocab = vocab
        self.references = dict(references or {})
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        # Token rows are padded to a fixed width so every rank's tensors concatenate.
        self.width = vocab.max_len + 2
        self.add_state("tokens", default=[], dist_reduce_fx="cat")

    def set_references(self, references: Mapping[int, Sequence[str]]) -> None:
        self.references = dict(references)

    def update(self, image_ids: torch.Tensor, tokens: torch.Tensor) -> None:
        tokens = tokens[:, : self.width]
        padded = tokens.new_zeros(tokens.shape[0], self.width)
        padded[:, : tokens.shape[1]] = tokens
        self.image_ids.append(image_ids.long())
        self.tokens.append(padded.long())

    def predictions(self) -> dict[int, str]:
        """Image id -> decoded caption, one per image (the first occurrence wins)."""
        ids = self.image_ids if isinstance(self.image_ids, torch.Tensor) else torch.cat(self.image_ids)
        toks = self.tokens if isinstance(self.tokens, torch.Tensor) else torch.cat(self.tokens)
        out: dict[int, str] = {}
        for i, row in zip(ids.tolist(), toks.tolist()):
            out.setdefault(i, self.vocab.decode(row))
        return out

    def compute(self) -> dict[str, float]:
        return score_captions(self.predictions(), self.references)
