"""Decoding algorithms written once against the decoder protocol (see decoders.py):
greedy, beam search and sampling. Shapes: B images, K beams, V vocabulary, L steps, P cells.

All three share two rules. A caption has at most `max_len` words: either up to max_len words
then <end> (finished), or exactly max_len words when the decoder never ended it
(unfinished). <pad> (id 0) and <start> are never emitted: the model is never trained to
predict them, so their logits are set to -inf and the log-probabilities are those of the
words that can be emitted."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .decoders import Decoder


class DecodeResult(NamedTuple):
    tokens: torch.Tensor  # (B, L) word ids, the first <end> included, then <pad>=0
    logprob: torch.Tensor  # (B,) sum of log-probabilities of the emitted tokens
    token_logprobs: torch.Tensor  # (B, L) log-probability of each emitted token, 0 after <end>
    alphas: torch.Tensor | None  # (B, L, P) attention per emitted token, or None


PAD_ID = 0  # capgen.vocab.Vocabulary.pad_id


def _word_logits(logits: torch.Tensor, start_id: int) -> torch.Tensor:
    """logits (R, V) -> float32 logits with <pad> and <start> excluded (-inf)."""
    logits = logits.float()  # float32 even under bf16 autocast
    logits[:, [PAD_ID, start_id]] = -math.inf
    return logits


def greedy(decoder: Decoder, feats: torch.Tensor, max_len: int, start_id: int, end_id: int) -> DecodeResult:
    """Most likely word at every step; stops when every caption has emitted <end>.

    feats (B, P, D). At most `max_len` words plus <end> are emitted per caption.
    """
    return _decode_loop(decoder, feats, max_len, start_id, end_id, lambda logits: logits.argmax(dim=-1))


def _decode_loop(decoder: Decoder, feats: torch.Tensor, max_len: int, start_id: int, end_id: int, choose) -> DecodeResult:
    """One caption per image, word by word: `choose(logits (n, V) float32) -> tokens (n,)`
    picks each next word; stops when every caption has emitted <end>. The log-probabilities
    recorded are the model's own (float32 even under bf16 autocast). After max_len words
    only <end> is taken: any other word is not emitted and the caption stays unfinished.
    A caption's row leaves the batch once it has ended, so later steps compute only the n
    captions still going (as beam search does)."""
    B, device = feats.shape[0], feats.device
    max_tokens = max_len + 1
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    active = torch.arange(B, device=device)  # (n,) the images whose captions are still going
    tokens = torch.full((B,), start_id, dtype=torch.long, device=device)  # (n,) last tokens
    out = torch.zeros(B, max_tokens, dtype=torch.long, device=device)  # (B, L), <pad> after <end>
    token_logprobs = torch.zeros(B, max_tokens, device=device)
    logprob = torch.zeros(B, device=device)  # summed step by step, in beam search's order
    alphas = None  # (B, L, P) for attention decoders, 0 after the caption
    for t in range(max_tokens):
        logits, state, alpha = decoder.step(tokens, state, memory)
        logits = _word_logits(logits, start_id)  # (n, V)
        tokens = choose(logits)  # (n,)
        picked = logits.log_softmax(dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)  # (n,)
        if t == max_len:  # max_len words already: <end> or nothing
            unfinished = tokens != end_id
            tokens, picked = tokens.masked_fill(unfinished, PAD_ID), picked.masked_fill(unfinished, 0)
        out[active, t] = tokens
        token_logprobs[active, t] = picked
        logprob[active] += picked
        if alpha is not None:
            if alphas is None:
                alphas = alpha.new_zeros(B, max_tokens, alpha.shape[-1])
            alphas[active, t] = alpha
        ended = tokens == end_id
        if ended.any():  # the captions that just ended leave the batch
            going = (~ended).nonzero().squeeze(1)  # (n',) positions among the n
            if len(going) == 0:
                break
            active, tokens = active[going], tokens[going]
            state = tuple(x.index_select(0, going) for x in state)
            memory = tuple(x.index_select(0, going) for x in memory)
    L = int((out != PAD_ID).sum(1).max())  # as wide as the longest caption
    alphas = alphas[:, :L] if alphas is not None else None
    return DecodeResult(out[:, :L], logprob, token_logprobs[:, :L], alphas)


def beam_search(
    decoder: Decoder,
    feats: torch.Tensor,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    length_penalty: float = 0.0,
) -> DecodeResult:
    """The best caption per image found by a beam of `beam_size` hypotheses.

    feats (B, P, D). The search space is greedy's: up to max_len words then <end>
    (finished), or max_len words without <end> (unfinished: the decoder never ended it).
    Hypotheses are ranked by
        score = sum of token log-probs / len ** length_penalty,   len counting the <end>,
    so 0 ranks by the raw log-probability and larger values favour longer captions.

    All images' beams run as one batch of K rows per image (image i at rows i*K .. i*K+K-1),
    so each step is one decoder call whatever the number of images; an image's rows leave
    the batch as soon as its search is over.

    Finishing rule. Each step takes the 2K best extensions of each image's K live beams:
    an extension that emits <end> and ranks among the K best is a finished hypothesis (the
    rank limit keeps beam_size=1 identical to greedy); the K best that do not emit <end>
    become the next live beams. Each image keeps its best finished hypothesis, and is done
    once no live beam can beat it: log-probs are <= 0, so a live beam of raw score s ends
    with a raw score <= s and at most max_len + 1 tokens, hence a score
    <= s / (max_len + 1) ** length_penalty. Stopping therefore never discards a hypothesis
    the beam could still reach (with a beam at least as wide as the search space, the
    result is the exact optimum). The search ends when every image is done or after
    max_len + 1 steps, the last of which only finishes beams; an image without a finished
    hypothesis by then returns its best unfinished beam (max_len words).

    Returns the best caption per image: tokens (B, L) with its <end> if finished, then pad
    0; logprob (B,) its raw sum of log-probs (float32); token_logprobs (B, L); alphas
    (B, L, P) of the chosen hypothesis for attention decoders (0 after the caption), else None.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size}: must be at least 1")
    if length_penalty < 0:
        raise ValueError(f"length_penalty={length_penalty}: must be >= 0 (0 ranks by the raw log-probability)")
    B, K, device = feats.shape[0], beam_size, feats.device
    max_tokens = max_len + 1  # max_len words + <end>, as greedy
    bound_div = max_tokens**length_penalty  # the longest caption's length divisor
    beam_offsets = torch.arange(K, device=device)

    # Per-image work once; each image's state repeated for its K beams, which share one copy
    # of its memory (the decoder protocol's G = K rows per memory row).
    memory = decoder.prepare(feats)  # (B, ...)
    state = decoder.init_state(memory)
    state = tuple(s.repeat_interleave(K, dim=0) for s in state)  # (B*K, ...)

    # The search state covers the n images still searching (at first all B): `active` holds
    # their ids, memory their n rows and every per-beam tensor their n*K rows.
    active = torch.arange(B, device=device)  # (n,)
    # At the start an image's K beams are the same empty caption: only the first is live
    # (the others score -inf), otherwise the beam would fill with K copies of each caption.
    scores = torch.full((B, K), -math.inf, device=device)  # (n, K) raw sums of log-probs, float32
    scores[:, 0] = 0
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=device)  # (n*K,) last tokens
    hist_tokens = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # (n*K, t) captions so far
    hist_logp = torch.zeros(B * K, 0, device=device)  # (n*K, t) their token log-probs
    hist_alpha = None  # (n*K, t, P) their attention maps, for attention decoders

    # Each image's best finished hypothesis, laid out as the result.
    best_norm = torch.full((B,), -math.inf, device=device)  # (B,) its normalised score
    best_logprob = torch.zeros(B, device=device)  # (B,) its raw score
    best_len = torch.zeros(B, dtype=torch.long, device=device)  # (B,) its tokens
    best_tokens = torch.zeros(B, max_tokens, dtype=torch.long, device=device)  # (B, L)
    best_logp = torch.zeros(B, max_tokens, device=device)  # (B, L)
    best_alpha = None  # (B, L, P)

    for t in range(max_tokens):
        n = len(active)
        logits, state, alpha = decoder.step(tokens, state, memory)  # (n*K, V), alpha (n*K, P) or None
        logp = _word_logits(logits, start_id).log_softmax(dim=-1)  # (n*K, V), float32
        V = logp.shape[-1]
        if alpha is not None and hist_alpha is None:
            hist_alpha = alpha.new_zeros(n * K, 0, alpha.shape[-1])
            best_alpha = alpha.new_zeros(B, max_tokens, alpha.shape[-1])

        # Every extension of every live beam, ranked per image over its K*V candidates. At
        # most K of them emit <end> (one per beam), so the 2K best hold K that do not.
        cand = scores.unsqueeze(-1) + logp.view(n, K, V)  # (n, K, V)
        top_scores, top_idx = cand.view(n, K * V).topk(min(2 * K, K * V), dim=1)  # (n, 2K)
        top_rows = torch.arange(n, device=device).unsqueeze(1) * K + top_idx // V  # (n, 2K) parent rows
        top_tokens = top_idx % V  # (n, 2K)
        is_end = top_tokens == end_id

        # Finished hypotheses: <end> among the K best. They all have t + 1 tokens, so the
        # raw maximum is also the normalised one; it replaces the image's best if better.
        end_scores = top_scores.masked_fill(~is_end, -math.inf)
        end_scores[:, K:] = -math.inf
        step_best, step_pos = end_scores.max(dim=1)  # (n,)
        step_norm = step_best / (t + 1) ** length_penalty
        better = (step_norm > best_norm[active]).nonzero().squeeze(1)  # positions among the n
        if len(better):
            b, rows = active[better], top_rows[better, step_pos[better]]  # image ids, parent rows
            # Hypotheses finish in order of length, so the new one overwrites all of the old.
            best_norm[b], best_logprob[b], best_len[b] = step_norm[better], step_best[better], t + 1
            best_tokens[b, :t] = hist_tokens[rows]
            best_tokens[b, t] = end_id
            best_logp[b, :t] = hist_logp[rows]
            best_logp[b, t] = logp[rows, end_id]
            if alpha is not None:
                best_alpha[b, :t] = hist_alpha[rows]
                best_alpha[b, t] = alpha[rows]

        if t == max_len:  # max_len words already: no live beam grows longer
            break
        # Live beams: the K best extensions that do not emit <end> (a stable sort on is_end
        # moves them to the front, still in score order).
        keep = is_end.int().argsort(dim=1, stable=True)[:, :K]  # (n, K) positions in the 2K
        scores = top_scores.gather(1, keep)  # (n, K)
        rows = top_rows.gather(1, keep).view(-1)  # (n*K,) parent row of each new beam
        tokens = top_tokens.gather(1, keep).view(-1)  # (n*K,)
        # Reorder state and histories to the new beams, then append this step.
        state = tuple(s.index_select(0, rows) for s in state)
        hist_tokens = torch.cat([hist_tokens.index_select(0, rows), tokens.unsqueeze(1)], dim=1)
        hist_logp = torch.cat([hist_logp.index_select(0, rows), logp[rows, tokens].unsqueeze(1)], dim=1)
        if alpha is not None:
            # a parent row's alpha is where it looked to emit the token chosen from it
            hist_alpha = torch.cat([hist_alpha.index_select(0, rows), alpha.index_select(0, rows).unsqueeze(1)], dim=1)

        # Done: even the best live beam, keeping its raw score up to the longest length,
        # cannot beat the best finished hypothesis.
        found = best_norm[active]
        done = (found > -math.inf) & (found >= scores.max(dim=1).values / bound_div)  # (n,)
        if done.all():
            active = active[:0]
            break
        if done.any():  # drop the finished images' rows: later steps compute the others only
            going = (~done).nonzero().squeeze(1)  # (n',) positions among the n
            going_rows = (going.unsqueeze(1) * K + beam_offsets).view(-1)  # (n'*K,)
            active, scores = active[going], scores[going]
            memory = tuple(m.index_select(0, going) for m in memory)
            state = tuple(s.index_select(0, going_rows) for s in state)
            tokens, hist_tokens, hist_logp = (x.index_select(0, going_rows) for x in (tokens, hist_tokens, hist_logp))
            if hist_alpha is not None:
                hist_alpha = hist_alpha.index_select(0, going_rows)

    # Out of length without a finished hypothesis: the best unfinished beam instead.
    unfinished = (best_norm[active] == -math.inf).nonzero().squeeze(1)  # positions among the n
    if len(unfinished):
        b = active[unfinished]
        live_score, live_k = scores[unfinished].max(dim=1)
        rows = unfinished * K + live_k
        length = hist_tokens.shape[1]
        best_logprob[b], best_len[b] = live_score, length
        best_tokens[b, :length] = hist_tokens[rows]
        best_logp[b, :length] = hist_logp[rows]
        if hist_alpha is not None:
            best_alpha[b, :length] = hist_alpha[rows]

    L = int(best_len.max())  # as greedy: as wide as the longest caption
    alphas = best_alpha[:, :L] if best_alpha is not None else None
    return DecodeResult(best_tokens[:, :L], best_logprob, best_logp[:, :L], alphas)


def sample(
    decoder: Decoder,
    feats: torch.Tensor,
    max_len: int,
    start_id: int,
    end_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """One random caption per image, for diverse captions; the same lengths as greedy.

    feats (B, P, D). Each word is drawn from softmax(logits / temperature), restricted to
    the `top_k` most likely words when given: temperature < 1 sharpens the distribution
    (-> 0 gives greedy), > 1 flattens it. `generator` (on feats' device) makes the draws
    reproducible.

    logprob and token_logprobs are the model's own log-probabilities of the drawn words
    (temperature 1, no top-k), so captions from any sampling settings rank on one scale.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0 (use greedy decoding for the argmax)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be at least 1 (or None for the whole vocabulary)")

    def draw(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        scaled = logits / temperature
        if top_k is not None and top_k < scaled.shape[-1]:
            # everything below the k-th largest logit gets probability 0
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
            scaled = scaled.masked_fill(scaled < kth, -math.inf)
        return torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(1)

    return _decode_loop(decoder, feats, max_len, start_id, end_id, draw)
