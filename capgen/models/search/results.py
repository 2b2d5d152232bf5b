"""What decoding returns, and the logits every method starts from.
Shapes: B images, N captions per image, L tokens, P attention cells, R rows, V vocabulary."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

PAD_ID = 0  # capgen.vocab.Vocabulary.pad_id


class DecodeResult(NamedTuple):
    """One caption per image."""

    tokens: torch.Tensor  # (B, L) word ids, the first <end> included, then <pad>=0
    logprob: torch.Tensor  # (B,) sum of log-probabilities of the emitted tokens
    token_logprobs: torch.Tensor  # (B, L) log-probability of each emitted token, 0 after <end>
    alphas: torch.Tensor | None  # (B, L, P) attention per emitted token, or None


class NBestResult(NamedTuple):
    """N captions per image (n_best > 1), image-major: caption j of image b at [b, j], best
    first for the beam methods, in draw order for sampling. A slot for which the search found
    no caption (fewer hypotheses than N exist) has no tokens and logprob -inf."""

    tokens: torch.Tensor  # (B, N, L) word ids, the first <end> included, then <pad>=0
    logprob: torch.Tensor  # (B, N)
    token_logprobs: torch.Tensor  # (B, N, L)
    alphas: torch.Tensor | None  # (B, N, L, P) or None

    @classmethod
    def from_rows(cls, result: DecodeResult, n: int) -> NBestResult:
        """A DecodeResult of B*n rows, row b*n + j caption j of image b, as (B, n, ...)."""
        tokens = result.tokens.view(-1, n, result.tokens.shape[1])
        alphas = result.alphas.view(*tokens.shape, -1) if result.alphas is not None else None
        return cls(tokens, result.logprob.view(-1, n), result.token_logprobs.view(tokens.shape), alphas)

    def first(self) -> DecodeResult:
        """Each image's first caption (the best of a beam), as wide as the longest of them."""
        L = int((self.tokens[:, 0] != PAD_ID).sum(1).max()) if len(self.tokens) else 0
        alphas = self.alphas[:, 0, :L] if self.alphas is not None else None
        return DecodeResult(self.tokens[:, 0, :L], self.logprob[:, 0], self.token_logprobs[:, 0, :L], alphas)


def first_captions(result: DecodeResult | NBestResult) -> DecodeResult:
    """One caption per image from either result: the result itself, or each image's first."""
    return result.first() if isinstance(result, NBestResult) else result


def word_logits(logits: torch.Tensor, start_id: int) -> torch.Tensor:
    """logits (R, V) -> logits of at least float32 with <pad> and <start> excluded (-inf)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 even under bf16 autocast
    logits[:, [PAD_ID, start_id]] = -math.inf
    return logits
