"""Decoding algorithms written once against the decoder protocol (see decoders.py)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .decoders import Decoder


class DecodeResult(NamedTuple):
    tokens: torch.Tensor  # (B, L) word ids, the first <end> included, then <pad>=0
    logprob: torch.Tensor  # (B,) sum of log-probabilities of the emitted tokens
    token_logprobs: torch.Tensor  # (B, L) log-probability of each emitted token, 0 after <end>
    alphas: torch.Tensor | None  # (B, L, P) attention per emitted token, or None


def greedy(decoder: Decoder, feats: torch.Tensor, max_len: int, start_id: int, end_id: int) -> DecodeResult:
    """Most likely word at every step; stops when every caption has emitted <end>.

    feats (B, P, D). At most `max_len` words plus <end> are emitted per caption.
    """
    B = feats.shape[0]
    memory = decoder.prepare(feats)
    state = decoder.init_state(memory)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    logprob = torch.zeros(B, device=feats.device)  # float32 even under bf16 autocast
    out, alphas, token_logprobs = [], [], []
    for _ in range(max_len + 1):
        logits, state, alpha = decoder.step(tokens, state, memory)
        logp = logits.float().log_softmax(dim=-1)
        best, tokens = logp.max(dim=-1)
        tokens = tokens.masked_fill(done, 0)  # finished captions only pad
        best = best.masked_fill(done, 0)
        logprob += best
        out.append(tokens)
        token_logprobs.append(best)
        if alpha is not None:
            alphas.append(alpha)
        done |= tokens == end_id
        if done.all():
            break
    alphas = torch.stack(alphas, 1) if alphas else None
    return DecodeResult(torch.stack(out, 1), logprob, torch.stack(token_logprobs, 1), alphas)
