"""Stepping a decoder through given captions, the plain reference the decoding tests compare with."""

from __future__ import annotations

import math

import torch

from capgen.models import TransformerDecoder


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


def tiny_sizes(cls) -> dict:
    """The sizes of a decoder class small enough for float64 reference checks."""
    if issubclass(cls, TransformerDecoder):
        return {"d_model": 8, "layers": 2, "heads": 2, "ffn_dim": 12}
    return {"embed_dim": 5, "hidden_dim": 7}


def sharp_decoder(cls, feature_dim: int, seed=0, vocab=17, scale=1.0, end_bias=0.0, unk_bias=0.0, end_id=2, unk_id=3):
    """A small float64 decoder in eval mode with random weights times `scale` (sharper
    distributions); `end_bias` makes <end> likelier, so that captions end at different lengths
    instead of all running to max_len, and `unk_bias` <unk>."""
    torch.manual_seed(seed)
    dec = cls(vocab_size=vocab, feature_dim=feature_dim, dropout=0.0, **tiny_sizes(cls)).double().eval()
    with torch.no_grad():
        for p in dec.parameters():
            p.mul_(scale)
        dec.out.bias[end_id] += end_bias
        dec.out.bias[unk_id] += unk_bias
    return dec
