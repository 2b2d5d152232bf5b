"""Transformer decoder over the encoder's grid (pre-norm, as captioners use it since Vaswani
et al. 2017): L layers of masked self-attention over the words, cross-attention over the P
grid cells and a feed-forward block, each added to its input through a LayerNorm.

    m         = LN(W_m f)                       the grid in model width d, (N, P, d)
    K_l, V_l  = m W_k^l, m W_v^l                layer l's cross-attention keys and values
    x         = sqrt(d) E y_t + pos(t)          word t's input
    x        += SelfAttn_l(LN x)                word t sees words 0..t
    x        += CrossAttn_l(LN x; K_l, V_l)
    x        += FFN_l(LN x)
    logits    = L_o LN(x)

m, K_l and V_l depend on the image only: `prepare` computes them once per image, and every
caption, beam and SCST sample of that image reads them (capgen.models.decoders: Rows).

The state of a decoding step is the self-attention's key/value cache, 2 L tensors
(R, heads, t, d / heads) for the t words fed so far, so a step computes one position. With
kv_cache=False it is the words fed so far (R, t) instead, and each step recomputes the whole
prefix: the same numbers at the cost of t positions, there to measure what the cache saves.
The attention shown and scored (alpha) is the cross-attention of one layer (attention_layer,
default the last), the mean over its heads or one head (attention_head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .decoders import Decoder, Rows, Tensors, check_decoder_settings, input_lengths

POSITIONS = ("sinusoidal", "learned")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, d) -> (B, heads, L, d / heads)."""
    B, L, d = x.shape
    return x.view(B, L, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d / heads) -> (B, L, d)."""
    B, h, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, h * dh)


def _image_major(rows: Rows, images: int) -> bool:
    """Whether rows are Rows.each(images, G): G consecutive rows per image, in image order."""
    every = Rows.each(images, rows.per_image, rows.image.device)
    return len(rows.image) == len(every.image) and bool((rows.image == every.image).all() and (rows.slot == every.slot).all())


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_self, self.norm_cross, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)  # self-attention's queries, keys and values
        self.self_out = nn.Linear(d, d)
        self.q_cross = nn.Linear(d, d)
        self.kv_cross = nn.Linear(d, 2 * d)  # applied to the grid once per image (prepare)
        self.cross_out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d))
        self.dropout = nn.Dropout(dropout)

    def memory(self, grid: torch.Tensor) -> Tensors:
        """grid (N, P, d) -> this layer's cross-attention keys and values, (N, heads, P, d / heads) each."""
        return tuple(_heads(x, self.heads) for x in self.kv_cross(grid).chunk(2, dim=-1))

    def cross(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: Rows | None):
        """x (R, L, d) -> attended (R, L, d), weights (R, heads, L, P). Without rows, each
        image's G = R / N consecutive rows are one batch entry of G L queries (no copy of its
        keys); rows read their image's keys and values through an index."""
        R, L, d = x.shape
        N, h, P, _ = keys.shape
        q = self.q_cross(x)
        if rows is None:
            G = R // N
            q = _heads(q.reshape(N, G * L, d), h)  # (N, h, G L, dh)
            w = torch.softmax(q @ keys.transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # (N, h, G L, P)
            out = _merge(w @ values).reshape(R, L, d)
            w = w.view(N, h, G, L, P).transpose(1, 2).reshape(R, h, L, P)
        else:
            keys, values = keys.index_select(0, rows.image), values.index_select(0, rows.image)  # (R, h, P, dh)
            w = torch.softmax(_heads(q, h) @ keys.transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # (R, h, L, P)
            out = _merge(w @ values)
        return self.cross_out(out), w

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, rows: Rows | None,
                past: tuple[torch.Tensor, torch.Tensor] | None):
        """x (R, L, d): the words at positions t..t+L-1, where past holds the self-attention
        keys and values of positions 0..t-1 (R, heads, t, dh), or None (t = 0).
        -> x, the keys and values of positions 0..t+L-1, cross-attention weights (R, heads, L, P)."""
        q, k, v = (_heads(z, self.heads) for z in self.qkv(self.norm_self(x)).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        if x.shape[1] > 1 and k.shape[2] != x.shape[1]:
            raise ValueError("several new words after cached ones: feed one word per step")
        # one new word sees every cached one; a whole caption, each word the ones before it
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=x.shape[1] > 1)
        x = x + self.dropout(self.self_out(_merge(attended)))
        crossed, w = self.cross(self.norm_cross(x), keys, values, rows)
        x = x + self.dropout(crossed)
        x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return x, (k, v), w


class TransformerDecoder(Decoder):
    has_attention = True

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        d_model: int = 128,
        layers: int = 2,
        heads: int = 4,
        ffn_dim: int = 512,
        dropout: float = 0.1,
        positions: str = "sinusoidal",
        max_positions: int = 64,
        kv_cache: bool = True,
        attention_layer: int = -1,
        attention_head: int | None = None,
    ):
        check_decoder_settings(dropout, d_model=d_model, layers=layers, heads=heads, ffn_dim=ffn_dim,
                               max_positions=max_positions)  # fmt: skip
        if d_model % heads:
            raise ValueError(f"model.decoder.d_model={d_model} with model.decoder.heads={heads}: the width must "
                             f"divide into the heads, e.g. model.decoder.heads={math.gcd(d_model, 4)}")  # fmt: skip
        if positions not in POSITIONS:
            raise ValueError(f"model.decoder.positions={positions!r}: must be one of {', '.join(POSITIONS)}")
        if isinstance(attention_layer, bool) or not isinstance(attention_layer, int) or not -layers <= attention_layer < layers:
            raise ValueError(f"model.decoder.attention_layer={attention_layer!r}: the layer whose cross-attention is "
                             f"shown and scored, 0..{layers - 1} or -1 for the last of model.decoder.layers={layers}")
        if attention_head is not None and (isinstance(attention_head, bool) or not isinstance(attention_head, int)
                                           or not 0 <= attention_head < heads):  # fmt: skip
            raise ValueError(f"model.decoder.attention_head={attention_head!r}: one head 0..{heads - 1}, or null for "
                             "the mean over the heads")  # fmt: skip
        super().__init__(vocab_size, feature_dim)
        self.d_model, self.heads, self.kv_cache = d_model, heads, bool(kv_cache)
        self.positions, self.max_positions = positions, max_positions
        self.attention_layer, self.attention_head = attention_layer % layers, attention_head
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)  # times sqrt(d) in use: unit scale, as the positions
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.pos = nn.Embedding(max_positions, d_model) if positions == "learned" else None
        self.grid_in = nn.Linear(feature_dim, d_model)
        self.grid_norm = nn.LayerNorm(d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, vocab_size)

    # ----- the protocol -------------------------------------------------------------------
    def prepare(self, feats: torch.Tensor) -> Tensors:
        """feats (N, P, D) -> every layer's cross-attention keys and values, 2 L tensors (N, heads, P, dh)."""
        grid = self.grid_norm(self.grid_in(feats))  # (N, P, d)
        return tuple(t for block in self.blocks for t in block.memory(grid))

    def init_state(self, memory: Tensors) -> Tensors:
        """No words yet: empty caches (N, heads, 0, dh), or no words (N, 0) without the cache."""
        N, h, _, dh = memory[0].shape
        if not self.kv_cache:
            return (torch.zeros(N, 0, dtype=torch.long, device=memory[0].device),)
        return tuple(memory[0].new_zeros(N, h, 0, dh) for _ in range(2 * len(self.blocks)))

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        """tokens (R,) -> logits (R, V), new state, alpha (R, P)."""
        if not self.kv_cache:  # the whole prefix again, its last position kept
            words = torch.cat((state[0], tokens.unsqueeze(1)), dim=1)  # (R, t + 1)
            x, _, alpha = self._layers(self._embed(words, 0), memory, rows, None)
            return self.out(x[:, -1]), (words,), alpha[:, -1]
        x, cache, alpha = self._layers(self._embed(tokens.unsqueeze(1), state[0].shape[2]), memory, rows, state)
        return self.out(x[:, 0]), cache, alpha[:, 0]

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor, rows: Rows | None = None, memory: Tensors | None = None,
                words: bool = True):
        """feats (N, P, D), inputs (R, T), rows: the image of each caption (None: caption b of
        image b), memory: prepare(feats) if made already -> logits (R, T, V), alphas (R, T, P);
        words=False: the word layer's input (R, T, d) in place of the logits. All positions
        at once, each seeing the words before it; alpha is 0 after a caption's last input,
        as in the attention LSTM."""
        memory = self.prepare(feats) if memory is None else memory
        x, _, alphas = self._layers(self._embed(inputs, 0), memory, rows, None)
        going = torch.arange(inputs.shape[1], device=inputs.device) < input_lengths(inputs).unsqueeze(1)  # (R, T)
        return (self.out(x) if words else x), alphas * going.unsqueeze(-1)

    # ----- the layers ---------------------------------------------------------------------
    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """tokens (R, L) at positions start..start+L-1 -> (R, L, d)."""
        L = tokens.shape[1]
        if start + L > self.max_positions and self.pos is not None:
            raise ValueError(
                f"a caption of {start + L} words, but model.decoder.max_positions={self.max_positions} learned "
                "positions: decode at most that many words (max_len), or train with a larger max_positions"
            )
        x = self.embed(tokens) * math.sqrt(self.d_model)
        return self.dropout(x + self._positions(start, L, x.dtype, x.device))

    def _positions(self, start: int, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(length, d): learned, or sin/cos of position / 10000^(2i/d) in the even/odd dims."""
        if self.pos is not None:
            return self.pos.weight[start:start + length].to(dtype)
        t = torch.arange(start, start + length, dtype=torch.float64, device=device).unsqueeze(1)  # (L, 1)
        rate = 10000.0 ** (-torch.arange(0, self.d_model, 2, dtype=torch.float64, device=device) / self.d_model)
        angle = t * rate  # (L, d / 2)
        return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(1).to(dtype)

    def _layers(self, x: torch.Tensor, memory: Tensors, rows: Rows | None, cache: Tensors | None):
        """x (R, L, d) -> LN(output) (R, L, d), the new cache (2 L tensors), alpha (R, L, P)."""
        if rows is not None and _image_major(rows, memory[0].shape[0]):
            rows = None  # G consecutive rows per image: the cross-attention needs no index
        new_cache, alpha = [], None
        for i, block in enumerate(self.blocks):
            past = None if cache is None else cache[2 * i:2 * i + 2]
            x, kv, w = block(x, memory[2 * i], memory[2 * i + 1], rows, past)
            new_cache += kv
            if i == self.attention_layer:  # w (R, heads, L, P)
                alpha = w.mean(dim=1) if self.attention_head is None else w[:, self.attention_head]
        return self.norm(x), tuple(new_cache), alpha
