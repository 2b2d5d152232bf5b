"""Batched beam search: the n best captions per image, optionally as a diverse beam.
Shapes: B images (n still searching), K beams, G groups of Kg = K/G beams, N = n_best,
V vocabulary, T = max_len + 1 token slots, P attention cells."""

from __future__ import annotations

import math

import torch

from ..decoders import Decoder
from .constraints import Constraints
from .results import DecodeResult, NBestResult, word_logits


def beam_search(
    decoder: Decoder,
    feats: torch.Tensor,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    length_penalty: float = 0.0,
    *,
    n_best: int = 1,
    groups: int = 1,
    diversity_strength: float = 0.0,
    constraints: Constraints | None = None,
) -> DecodeResult | NBestResult:
    """The best caption per image (n_best=1: a DecodeResult), or the n_best best (an
    NBestResult, best first), found by a beam of `beam_size` hypotheses.

    feats (B, P, D). The search space is greedy's: up to max_len words then <end>
    (finished), or max_len words without <end> (unfinished: the decoder never ended it),
    less what `constraints` block. Hypotheses are ranked by
        score = sum of token log-probs / len ** length_penalty,   len counting the <end>,
    so 0 ranks by the raw log-probability and larger values favour longer captions.

    All images' beams run as one batch of K rows per image (image i at rows i*K .. i*K+K-1),
    so each step is one decoder call whatever the number of images; an image's rows leave
    the batch as soon as its search is over.

    Finishing rule. Each step takes the 2K best extensions of each image's K live beams:
    an extension that emits <end> and ranks among the K best is a finished hypothesis (the
    rank limit keeps beam_size=1 identical to greedy); the K best that do not emit <end>
    become the next live beams. Each image keeps its n_best best finished hypotheses, and
    is done once no live beam can beat the worst of them: log-probs are <= 0, so a live beam
    of raw score s ends with a raw score <= s and at most max_len + 1 tokens, hence a score
    <= s / (max_len + 1) ** length_penalty. Stopping therefore never discards a hypothesis
    the beam could still reach (with a beam at least as wide as the search space, the
    result is the exact n best). The search ends when every image is done or after
    max_len + 1 steps, the last of which only finishes beams; an image with fewer than
    n_best finished hypotheses by then fills its other places with its best unfinished
    beams (max_len words; not those just finished, which would read the same), after the
    finished ones.

    Diverse beam (groups > 1; Vijayakumar et al. 2016). The K beams form G groups of K/G;
    each group starts from the empty caption and runs the rule above on its own beams, the
    groups one after another within a step. Group g ranks an extension by its score minus
    diversity_strength times the number of earlier groups whose new live beams end in the
    same word at this step (Hamming diversity); the hypotheses it finishes keep their own
    score, and all groups' finished hypotheses compete for the n_best places (two groups
    may reach the same caption: the n best can then hold it twice). groups=1 is the plain
    beam.

    Returns tokens (B, L) or (B, N, L) with each caption's <end> if finished, then pad 0;
    logprob its raw sum of log-probs (float32, float64 for a float64 model); token_logprobs; alphas (B, [N,] L, P) of the
    chosen hypotheses for attention decoders (0 after the caption), else None.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size}: must be at least 1")
    if length_penalty < 0:
        raise ValueError(f"length_penalty={length_penalty}: must be >= 0 (0 ranks by the raw log-probability)")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best={n_best}: a beam of {beam_size} returns between 1 and {beam_size} captions")
    if groups < 1 or beam_size % groups:
        raise ValueError(f"groups={groups}: the groups split the beam of {beam_size} evenly")
    if diversity_strength < 0:
        raise ValueError(f"diversity_strength={diversity_strength}: must be >= 0")
    result = _search(decoder, feats, beam_size, max_len, start_id, end_id, length_penalty, n_best, groups,
                     diversity_strength if groups > 1 else 0.0, constraints)
    return result.first() if n_best == 1 else result


def _search(decoder, feats, K, max_len, start_id, end_id, length_penalty, N, G, strength, constraints) -> NBestResult:
    B, device = feats.shape[0], feats.device
    Kg = K // G
    T = max_len + 1  # max_len words + <end>, as greedy
    beam_offsets = torch.arange(K, device=device)

    # Per-image work once; the rows of an image share one copy of its memory (the decoder
    # protocol's rows per memory row). The first step runs on one row per group (B*G rows):
    # a group's Kg beams are all the empty caption then, so its other rows would repeat that
    # row's work (a third of the first step's for beam 3). Its result is then repeated Kg
    # times, giving every later step K rows per image.
    memory = decoder.prepare(feats)  # (B, ...)
    state = decoder.init_state(memory)
    state = tuple(s.repeat_interleave(G, dim=0) for s in state)  # (B*G, ...)

    # The search state covers the n images still searching (at first all B): `active` holds
    # their ids, memory their n rows and every per-beam tensor their n*K rows.
    active = torch.arange(B, device=device)  # (n,)
    # At the start each group's Kg beams are the same empty caption: only its first is live
    # (the others score -inf), otherwise the beam would fill with Kg copies of each caption.
    dtype = torch.promote_types(feats.dtype, torch.float32)  # log-probs: at least float32, as the other methods
    scores = torch.full((B, K), -math.inf, device=device, dtype=dtype)  # (n, K) raw sums of log-probs
    scores[:, ::Kg] = 0
    tokens = torch.full((B * G,), start_id, dtype=torch.long, device=device)  # (n*K,) last tokens; first (B*G,)
    hist_tokens = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # (n*K, t) captions so far
    hist_logp = torch.zeros(B * K, 0, device=device, dtype=dtype)  # (n*K, t) their token log-probs
    hist_alpha = None  # (n*K, t, P) their attention maps, for attention decoders

    # Each image's N best finished hypotheses, best first, laid out as the result.
    pool = _Pool(B, N, T, device, dtype)

    for t in range(T):
        n = len(active)
        logits, state, alpha = decoder.step(tokens, state, memory)  # (n*K, V), alpha (n*K, P) or None
        if t == 0 and Kg > 1:  # (B*G, ...) -> (B*K, ...): each group's row for its Kg beams
            state = tuple(s.repeat_interleave(Kg, dim=0) for s in state)
            logits, alpha = (x if x is None else x.repeat_interleave(Kg, dim=0) for x in (logits, alpha))
        logp = word_logits(logits, start_id).log_softmax(dim=-1)  # (n*K, V)
        if constraints is not None:
            logp = constraints.apply(logp, hist_tokens)
        V = logp.shape[-1]
        if alpha is not None and hist_alpha is None:
            hist_alpha = alpha.new_zeros(n * K, 0, alpha.shape[-1])
        logp_beams = logp.view(n, K, V)
        first_rows = torch.arange(n, device=device).unsqueeze(1) * K  # (n, 1) each image's first row

        ended, live = [], []  # per group: (scores, parent rows) of finished hypotheses; live beams
        chosen = None  # (n, V + 1) how many earlier groups' new live beams end in each word
        for g in range(G):
            cols = slice(g * Kg, (g + 1) * Kg)
            # Every extension of the group's live beams, ranked per image over its Kg*V
            # candidates. At most Kg of them emit <end> (one per beam), so the 2Kg best hold
            # Kg that do not.
            cand = scores[:, cols].unsqueeze(-1) + logp_beams[:, cols]  # (n, Kg, V)
            ranked = cand if chosen is None else cand - strength * chosen[:, :V].unsqueeze(1)
            top_ranked, top_idx = ranked.view(n, Kg * V).topk(min(2 * Kg, Kg * V), dim=1)  # (n, 2Kg)
            top_scores = top_ranked if chosen is None else cand.view(n, Kg * V).gather(1, top_idx)
            top_rows = first_rows + g * Kg + top_idx // V  # (n, 2Kg) parent rows
            top_tokens = top_idx % V  # (n, 2Kg)
            is_end = top_tokens == end_id

            # Finished hypotheses: <end> among the Kg best.
            end_scores = top_scores.masked_fill(~is_end, -math.inf)[:, :Kg]
            ended.append((end_scores, top_rows[:, :Kg]))
            if t == max_len:  # max_len words already: no live beam grows longer
                continue
            # Live beams: the Kg best extensions that do not emit <end> (a stable sort on
            # is_end moves them to the front, still in rank order).
            keep = is_end.int().argsort(dim=1, stable=True)[:, :Kg]  # (n, Kg) positions in the 2Kg
            live.append(tuple(x.gather(1, keep) for x in (top_scores, top_rows, top_tokens)))
            if strength > 0 and g < G - 1:
                live_scores, _, live_tokens = live[-1]
                if chosen is None:
                    chosen = logp.new_zeros(n, V + 1)
                # a dead beam (-inf) chose nothing: its count goes to the spare column V
                chosen.scatter_add_(1, live_tokens.masked_fill(live_scores == -math.inf, V),
                                    torch.ones_like(live_scores))

        # Finished hypotheses all have t + 1 tokens, so their scores divide alike.
        end_scores, end_rows = (torch.cat(x, dim=1) for x in zip(*ended))  # (n, K)
        pool.add(active, _rank_key(end_scores, t + 1, length_penalty), end_scores, end_rows, t, end_id,
                 hist_tokens, hist_logp, logp, hist_alpha, alpha)

        if t == max_len:
            # A beam whose <end> just finished it is in the pool already: not again unfinished.
            offered = end_rows[end_scores > -math.inf]
            scores = scores.masked_fill(torch.isin(first_rows + beam_offsets, offered), -math.inf)
            break
        scores, rows, tokens = (torch.cat(x, dim=1) for x in zip(*live))  # (n, K) each
        rows, tokens = rows.view(-1), tokens.view(-1)  # (n*K,) parent row and token of each new beam
        # Reorder state and histories to the new beams, then append this step.
        state = tuple(s.index_select(0, rows) for s in state)
        hist_tokens = torch.cat([hist_tokens.index_select(0, rows), tokens.unsqueeze(1)], dim=1)
        hist_logp = torch.cat([hist_logp.index_select(0, rows), logp[rows, tokens].unsqueeze(1)], dim=1)
        if alpha is not None:
            # a parent row's alpha is where it looked to emit the token chosen from it
            hist_alpha = torch.cat([hist_alpha.index_select(0, rows), alpha.index_select(0, rows).unsqueeze(1)], dim=1)

        # Done: even the best live beam, keeping its raw score up to the longest length,
        # cannot beat the worst of the image's n best finished hypotheses.
        found = pool.key[active, N - 1]
        done = (found > -math.inf) & (found >= _rank_key(scores.max(dim=1).values, T, length_penalty))  # (n,)
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

    pool.fill_unfinished(active, scores, hist_tokens, hist_logp, hist_alpha)
    return pool.result()


def _rank_key(raw: torch.Tensor, length: int, length_penalty: float) -> torch.Tensor:
    """A key that orders raw sums of log-probs (<= 0; -inf: none) of `length` tokens as
    raw / length ** length_penalty does: lp * log(length) - log(-raw), strictly increasing in
    it. Computed as is, the score overflows (length ** 221 for 25 tokens) or underflows in
    float32 (-20 / 11**40 is -0.), and then every caption ties; the log never does. float64,
    so that two float32 scores a hair apart stay apart after the log."""
    return length_penalty * math.log(length) - torch.log(-raw.double())


class _Pool:
    """Each image's N best finished hypotheses, best first: rank keys (_rank_key) and raw
    scores, lengths, tokens, token log-probs and attention maps (B, N, ...). An empty place has
    key -inf and length 0."""

    def __init__(self, B: int, N: int, T: int, device: torch.device, dtype: torch.dtype):
        self.N, self.T = N, T
        self.key = torch.full((B, N), -math.inf, device=device, dtype=torch.float64)  # (B, N) rank keys
        self.raw = torch.zeros(B, N, device=device, dtype=dtype)  # (B, N) raw sums of log-probs
        self.len = torch.zeros(B, N, dtype=torch.long, device=device)  # (B, N) tokens
        self.tokens = torch.zeros(B, N, T, dtype=torch.long, device=device)
        self.logp = torch.zeros(B, N, T, device=device, dtype=dtype)
        self.alpha = None  # (B, N, T, P)

    def add(self, active, key, raw, rows, t, end_id, hist_tokens, hist_logp, logp, hist_alpha, alpha) -> None:
        """Candidates finished at step t, (n, C) each for the n active images: their
        rank keys and raw scores (-inf: no candidate) and parent rows. An image takes the
        N best of its places and candidates; on equal scores the earlier (shorter) one stays."""
        N = self.N
        better = (key.max(dim=1).values > self.key[active, N - 1]).nonzero().squeeze(1)  # positions among n
        if len(better) == 0:
            return
        b = active[better]  # image ids
        if alpha is not None and self.alpha is None:
            self.alpha = alpha.new_zeros(*self.tokens.shape, alpha.shape[-1])
        merged = torch.cat([self.key[b], key[better]], dim=1)  # (m, N + C), places first
        order = merged.argsort(dim=1, descending=True, stable=True)[:, :N]  # (m, N)
        kept = order < N  # (m, N) an old place, else a new candidate
        old = order.clamp(max=N - 1)  # (m, N) the old place kept (where kept)
        new = (order - N).clamp(min=0)  # (m, N) the candidate taken (elsewhere)
        parents = rows[better].gather(1, new)  # (m, N) its parent row among the n*K

        def place(current: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
            """current (m, N, ...) places, candidate (m, N, ...) -> the new places."""
            index = old.view(*old.shape, *[1] * (current.dim() - 2)).expand_as(current)
            mask = kept.view(*kept.shape, *[1] * (current.dim() - 2))
            return torch.where(mask, current.gather(1, index), candidate)

        self.key[b] = merged.gather(1, order)
        self.raw[b] = place(self.raw[b], raw[better].gather(1, new))
        self.len[b] = place(self.len[b], torch.full_like(parents, t + 1))
        tokens = self.tokens.new_zeros(*parents.shape, self.T)  # (m, N, T)
        tokens[:, :, :t] = hist_tokens[parents]
        tokens[:, :, t] = end_id
        self.tokens[b] = place(self.tokens[b], tokens)
        token_logp = self.logp.new_zeros(*parents.shape, self.T)
        token_logp[:, :, :t] = hist_logp[parents]
        token_logp[:, :, t] = logp[parents, end_id]
        self.logp[b] = place(self.logp[b], token_logp)
        if alpha is not None:
            maps = self.alpha.new_zeros(*parents.shape, *self.alpha.shape[2:])  # (m, N, T, P)
            maps[:, :, :t] = hist_alpha[parents]
            maps[:, :, t] = alpha[parents]
            self.alpha[b] = place(self.alpha[b], maps)

    def fill_unfinished(self, active, scores, hist_tokens, hist_logp, hist_alpha) -> None:
        """Out of length: the places the n active images have not filled with finished
        hypotheses take their best live beams (raw `scores` (n, K), histories (n*K, L)), in
        score order."""
        if len(active) == 0:
            return
        N, K, length = self.N, scores.shape[1], hist_tokens.shape[1]
        empty = self.len[active] == 0  # (n, N), the last places
        need = empty.any(dim=1).nonzero().squeeze(1)  # positions among the n
        if len(need) == 0:
            return
        b = active[need]
        live, beam = scores[need].sort(dim=1, descending=True, stable=True)  # (m, K)
        filled = (~empty[need]).sum(dim=1, keepdim=True)  # (m, 1) finished places
        j = (torch.arange(N, device=scores.device) - filled).clamp(min=0)  # (m, N) live rank for each place
        score = live.gather(1, j)
        take = empty[need] & (score > -math.inf)  # (m, N)
        rows = need.unsqueeze(1) * K + beam.gather(1, j)  # (m, N) rows among the n*K
        self.raw[b] = torch.where(take, score, self.raw[b])
        self.len[b] = torch.where(take, length, self.len[b])
        tokens = self.tokens[b].clone()
        tokens[:, :, :length] = torch.where(take.unsqueeze(-1), hist_tokens[rows], tokens[:, :, :length])
        self.tokens[b] = tokens
        token_logp = self.logp[b].clone()
        token_logp[:, :, :length] = torch.where(take.unsqueeze(-1), hist_logp[rows], token_logp[:, :, :length])
        self.logp[b] = token_logp
        if hist_alpha is not None:
            if self.alpha is None:
                self.alpha = hist_alpha.new_zeros(*self.tokens.shape, hist_alpha.shape[-1])
            maps = self.alpha[b].clone()
            maps[:, :, :length] = torch.where(take.view(*take.shape, 1, 1), hist_alpha[rows], maps[:, :, :length])
            self.alpha[b] = maps

    def result(self) -> NBestResult:
        L = int(self.len.max())  # as greedy: as wide as the longest caption
        logprob = self.raw.masked_fill(self.len == 0, -math.inf)  # an empty place: no caption
        alphas = self.alpha[:, :, :L] if self.alpha is not None else None
        return NBestResult(self.tokens[:, :, :L], logprob, self.logp[:, :, :L], alphas)
