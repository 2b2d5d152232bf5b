"""Greedy decoding and sampling: one caption per row, word by word.
Shapes: B images, n captions per image, R = B*n rows, V vocabulary, L steps, P cells."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..decoders import Decoder, Rows, Tensors, per_row
from .constraints import Constraints
from .results import PAD_ID, DecodeResult, word_logits


def greedy(
    decoder: Decoder,
    feats: torch.Tensor,
    max_len: int,
    start_id: int,
    end_id: int,
    *,
    constraints: Constraints | None = None,
    memory: Tensors | None = None,
) -> DecodeResult:
    """Most likely word at every step (among those `constraints` allow); stops when every
    caption has emitted <end>.

    feats (B, P, D); memory: decoder.prepare(feats) when the caller has it already. At most
    `max_len` words plus <end> are emitted per caption.
    """
    return decode_rows(decoder, feats, max_len, start_id, end_id, lambda logits: logits.argmax(dim=-1), constraints,
                       memory=memory)


def sample(
    decoder: Decoder,
    feats: torch.Tensor,
    max_len: int,
    start_id: int,
    end_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    *,
    top_p: float = 1.0,
    n: int = 1,
    constraints: Constraints | None = None,
    memory: Tensors | None = None,
) -> DecodeResult:
    """`n` random captions per image, for diverse captions; the same lengths as greedy.

    feats (B, P, D); memory: decoder.prepare(feats) when the caller has it already. Each word is drawn from softmax(logits / temperature), restricted to
    the `top_k` most likely words when given, then to the nucleus: the fewest most likely
    words whose probability (after temperature and top-k) sums to at least `top_p`.
    Temperature < 1 sharpens the distribution (-> 0 gives greedy), > 1 flattens it.
    `generator` (on feats' device) makes the draws reproducible. With n > 1 the result has
    B*n rows, image-major: row b*n + j is draw j of image b.

    logprob and token_logprobs are the model's own log-probabilities of the drawn words
    (temperature 1, no top-k or top-p), so captions from any sampling settings rank on one scale.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0 (use greedy decoding for the argmax)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be at least 1 (or None for the whole vocabulary)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: must be in (0, 1] (1: no nucleus cut)")
    if n < 1:
        raise ValueError(f"n={n}: draw at least 1 caption per image")

    def draw(logits: torch.Tensor) -> torch.Tensor:  # (R, V) -> (R,)
        scaled = logits / temperature
        if top_k is not None and top_k < scaled.shape[-1]:
            # everything below the k-th largest logit gets probability 0
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (R, 1)
            scaled = scaled.masked_fill(scaled < kth, -math.inf)
        probs = scaled.softmax(dim=-1)
        if top_p < 1:
            probs = nucleus(probs, top_p)
        return categorical(probs, generator)

    return decode_rows(decoder, feats, max_len, start_id, end_id, draw, constraints, n, memory)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One word per row drawn from probs (R, V) (rows summing to about 1, zeros never drawn):
    row r gets the first word whose cumulative probability exceeds u_r * total_r, u_r uniform
    in [0, 1). One uniform per row and one cumulative sum, where torch.multinomial draws an
    exponential variate for every word of every row: with 9,487 words and 250 rows that was
    13% of a self-critical step (2-core AMD EPYC Zen 4)."""
    cdf = probs.cumsum(dim=-1)  # (R, V) non-decreasing: a word of probability 0 adds nothing
    u = torch.rand(probs.shape[0], 1, device=probs.device, dtype=cdf.dtype, generator=generator)  # (R, 1)
    # right=True: the first index whose cdf is strictly above the target, a word with p > 0
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=probs.shape[1] - 1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs (R, V) -> probs with 0 outside each row's nucleus: a word stays when the words
    more likely than it hold less than top_p of the mass (so the most likely always stays)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)  # (R, V)
    before = F.pad(sorted_p.cumsum(dim=-1)[:, :-1], (1, 0))  # mass of the more likely words
    outside = before >= top_p
    return probs.masked_fill(outside.scatter(1, order, outside), 0.0)


def decode_rows(
    decoder: Decoder,
    feats: torch.Tensor,
    max_len: int,
    start_id: int,
    end_id: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
    constraints: Constraints | None = None,
    n: int = 1,
    memory: Tensors | None = None,
) -> DecodeResult:
    """`n` captions per image, word by word: `choose(logits (R, V) float32) -> tokens (R,)`
    picks each next word among those `constraints` leave (the others at -inf); stops when
    every caption has emitted <end>. The log-probabilities recorded are the model's own
    (float32 even under bf16 autocast). After max_len words only <end> is taken: any other
    word is not emitted and the caption stays unfinished. A caption's row leaves the batch
    once it has ended, so later steps compute only the captions still going (as beam
    search does). Rows are image-major: row b*n + j is caption j of image b; the n captions
    of an image share its memory and initial state (capgen.models.decoders.Rows).
    Run with gradients enabled, logprob and token_logprobs carry them (self-critical
    training differentiates the sampler's own log-probabilities); the rest never does."""
    memory = decoder.prepare(feats) if memory is None else memory  # per image, once
    R, device = feats.shape[0] * n, feats.device
    rows = Rows.each(feats.shape[0], n, device)  # (R,) the image of each caption still going
    max_tokens = max_len + 1
    state = per_row(decoder.init_state(memory), rows)
    active = torch.arange(R, device=device)  # (r,) the rows whose captions are still going
    tokens = torch.full((R,), start_id, dtype=torch.long, device=device)  # (r,) last tokens
    out = torch.zeros(R, max_tokens, dtype=torch.long, device=device)  # (R, L), <pad> after <end>
    dtype = torch.promote_types(feats.dtype, torch.float32)  # the log-probabilities': at least float32
    token_logprobs = torch.zeros(R, max_tokens, device=device, dtype=dtype)
    logprob = torch.zeros(R, device=device, dtype=dtype)  # summed step by step, in beam search's order
    alphas = None  # (R, L, P) for attention decoders, 0 after the caption
    for t in range(max_tokens):
        logits, state, alpha = decoder.step(tokens, state, memory, rows)
        logits = word_logits(logits, start_id)  # (r, V)
        with torch.no_grad():  # which word: no gradient (SCST runs this loop with gradients on)
            tokens = choose(logits if constraints is None else constraints.apply(logits, out[active, :t]))  # (r,)
        picked = logits.log_softmax(dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)  # (r,)
        if t == max_len:  # max_len words already: <end> or nothing
            unfinished = tokens != end_id
            tokens, picked = tokens.masked_fill(unfinished, PAD_ID), picked.masked_fill(unfinished, 0)
            if alpha is not None:  # no word, no map: 0 after the caption
                alpha = alpha.masked_fill(unfinished.unsqueeze(1), 0)
        out[active, t] = tokens
        token_logprobs[active, t] = picked
        logprob[active] += picked
        if alpha is not None:
            if alphas is None:
                alphas = alpha.new_zeros(R, max_tokens, alpha.shape[-1])
            alphas[active, t] = alpha.detach()  # for figures: no gradient kept
        ended = tokens == end_id
        if ended.any():  # the captions that just ended leave the batch
            going = (~ended).nonzero().squeeze(1)  # (r',) positions among the r
            if len(going) == 0:
                break
            active, tokens = active[going], tokens[going]
            state, rows = tuple(x.index_select(0, going) for x in state), rows.take(going)
    L = int((out != PAD_ID).sum(1).max())  # as wide as the longest caption
    alphas = alphas[:, :L] if alphas is not None else None
    return DecodeResult(out[:, :L], logprob, token_logprobs[:, :L], alphas)
