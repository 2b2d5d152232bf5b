"""Stepping a decoder through given captions, the plain reference the decoding tests compare with."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def replay(dec, feats, tokens, start_id: int):
    """Step `dec` through captions tokens (R, L) (pad after <end> is stepped too; its log-prob
    is -inf, ignore it): log-probs of the emittable words at every step (R, L, V) and the
    attention maps (R, L, P), or None for decoders without attention."""
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    prev = torch.full((len(tokens),), start_id, dtype=torch.long)
    logps, alphas = [], []
    for t in range(tokens.shape[1]):
        logits, state, alpha = dec.step(prev, state, memory)
        logits[:, [0, start_id]] = -math.inf  # <pad> and <start> are never words
        logps.append(logits.log_softmax(-1))
        alphas.append(alpha)
        prev = tokens[:, t]
    return torch.stack(logps, 1), (torch.stack(alphas, 1) if dec.has_attention else None)
